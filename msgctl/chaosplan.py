"""What chaos support a deployment gets when it starts (`msgctl up` writes it into plan.json).

Network faults need each region's programs in a cgroup of their own and the
deployment's iptables chains: possible for a cluster topology of two or more
regions when this machine allows it (root, iptables, cgroup v2). Link faults
also need the inter-region connections to pass a Toxiproxy per region
(``chaos.link_proxy``; ``auto`` turns it on when possible, ``on`` insists).
Process faults (kill, pause, stop) need nothing and work everywhere.
"""

from __future__ import annotations

from pathlib import Path

from chaos import netfilter
from chaos.host import ChaosPlan, deployment_id
from chaos.netfilter import RegionNet
from msgctl import topology as topo_mod
from msgctl.errors import MsgctlError
from msgctl.infra import toxiproxy


def prepare(topo: topo_mod.Topology, home_root: Path) -> tuple[ChaosPlan, Path | None, list[str]]:
    """The chaos plan, the Toxiproxy binary when links are proxied, and warnings to show."""
    regions = [RegionNet(r.name, r.host, i) for i, r in enumerate(topo.regions)]
    plan = ChaosPlan(deployment_id(home_root), regions,
                     multi_region_cluster=topo.multi_region_cluster)
    warnings: list[str] = []
    if not topo.multi_region_cluster:
        plan.network_reason = "a cluster topology with at least two regions"
        plan.proxy_reason = f"needs {plan.network_reason}"
        return plan, None, warnings
    reason = netfilter.unavailable_reason()
    mode = topo.chaos.link_proxy
    if reason is not None:
        plan.network_reason = reason
        plan.proxy_reason = f"needs {reason}"
        if mode == "on":
            raise MsgctlError(f"chaos.link_proxy is on, and it needs {reason}")
        if mode == "auto":
            warnings.append(f"network faults and the link proxy are off: they need {reason}")
        return plan, None, warnings
    plan.network = True
    if mode == "off":
        plan.proxy_reason = "chaos.link_proxy is off"
        return plan, None, warnings
    try:
        binary = toxiproxy.ensure()
    except MsgctlError as exc:
        if mode == "on":
            raise
        plan.proxy_reason = exc.message
        warnings.append(f"the link proxy is off: {exc.message}")
        return plan, None, warnings
    proxies = topo_mod.link_proxies(topo.backend, topo.regions, topo.chaos)
    plan.proxies = {
        region.name: {"api": f"http://{region.host}:{topo.chaos.proxy_port}",
                      "proxies": [p.to_dict() for p in proxies[region.name]]}
        for region in topo.regions}
    return plan, binary, warnings
