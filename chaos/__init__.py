"""Fault injection and drills for a running msgctl deployment.

The pure parts (units, selectors, fault specs, rule text, the history checker,
drill files) are importable without privileges or a deployment; the parts that
touch the machine (cgroups, iptables, Toxiproxy, signals) are driven by the
supervisor (`chaos.host`), which owns every fault's timer and the fault ledger.
`msgctl chaos` and `msgctl drill` are the command-line faces (docs/chaos.md).
"""
