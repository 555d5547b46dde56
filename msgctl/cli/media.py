"""`msgctl media upload FILE --user U [--to CONV]`: the media flow of a client, from a terminal.

It does what an app does: asks the region's gateway for an upload slot over
the WebSocket (as USER, with a dev token of this deployment), POSTs the file
to the presigned URL, and, with --to, sends a message carrying the media to
that conversation. It prints the media object (key, signed download URL).
"""

from __future__ import annotations

import asyncio
import json
import mimetypes
import ssl
from pathlib import Path
from typing import Annotated, Any

import typer

from msgctl import wire
from msgctl.cli.common import HomeOpt, JsonOpt, console, get_home
from msgctl.errors import EXIT_NOT_RUNNING, MsgctlError, UsageError
from msgctl.tls import trust
from runtime import auth

media_app = typer.Typer(help="Media: upload a file as a user, like a client.",
                        no_args_is_help=True)


def _kind(content_type: str) -> str:
    major = content_type.split("/", 1)[0]
    return major if major in ("image", "video", "audio") else "file"


async def _request(ws: Any, frame: dict[str, Any]) -> dict[str, Any]:
    return await wire.call(ws, frame, 10, per_frame=True)


async def _upload(ws_url: str, token: str, path: Path, kind: str, content_type: str,
                  conv: str | None, text: str, tls: ssl.SSLContext | None) -> dict[str, Any]:
    import httpx

    size = path.stat().st_size
    async with await wire.connect(ws_url, token, **({"ssl": tls} if tls else {})) as ws:
        await ws.recv()  # hello
        slot = await _request(ws, {"t": "upload", "id": "u", "kind": kind,
                                   "content_type": content_type, "size": size})
        if slot["t"] != "upload_url":
            raise MsgctlError(f"upload refused: {slot.get('code')}: {slot.get('message')}")
        # httpx writes the form as browsers do (Content-Disposition first); the file streams
        # from disk
        with path.open("rb") as fh:
            async with httpx.AsyncClient(timeout=httpx.Timeout(30, write=None),
                                         verify=tls or True) as http:
                resp = await http.post(slot["upload"]["url"], data=slot["upload"]["fields"],
                                       files={"file": (path.name, fh, content_type)})
            if resp.status_code != 204:
                raise MsgctlError(f"POST {slot['upload']['url']} answered {resp.status_code}: "
                                  f"{resp.text[:300]}")
        out: dict[str, Any] = {"media": slot["media"]}
        if conv:
            sent = await _request(ws, {"t": "send", "id": "s", "conv": conv,
                                       "cid": slot["media"]["key"].rsplit("/", 1)[1],
                                       "kind": kind, "body": text, "media": slot["media"]})
            if sent["t"] != "sent":
                raise MsgctlError(f"send refused: {sent.get('code')}: {sent.get('message')}")
            out["sent"] = {k: sent[k] for k in ("conv", "cid", "seq")}
        return out


@media_app.command("upload")
def upload(
    file: Annotated[Path, typer.Argument(help="The file to upload.", exists=True,
                                         dir_okay=False, readable=True)],
    user: Annotated[str, typer.Option("--user", "-u", help="Upload as this user.")],
    to: Annotated[str | None, typer.Option("--to", help="Also send it to this conversation "
                                           "(the user must be a member).")] = None,
    text: Annotated[str, typer.Option("--text", help="Message body with --to.")] = "",
    kind: Annotated[str | None, typer.Option(help="image, video, audio or file (default: "
                                             "from the content type).")] = None,
    content_type: Annotated[str | None, typer.Option(
        "--content-type", help="Default: guessed from the file name.")] = None,
    device: Annotated[str, typer.Option(help="Device id of the client.")] = "msgctl",
    region: Annotated[str | None, typer.Option(help="Region (default: the first).")] = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Upload FILE as USER through the presigned URL; with --to, send it as a message."""
    h = get_home(home)
    regions = (h.deployment() or {}).get("regions", [])
    if not regions:
        raise MsgctlError(f"nothing deployed under {h.root}; run 'msgctl up'", EXIT_NOT_RUNNING)
    chosen = next((r for r in regions if region in (None, r["name"])), None)
    if chosen is None:
        raise UsageError(f"no region '{region}'; regions: "
                         f"{', '.join(r['name'] for r in regions)}")
    ctype = content_type or mimetypes.guess_type(file.name)[0] or "application/octet-stream"
    token = auth.issue(h.secret(), user, device, 600)
    try:
        out = asyncio.run(_upload(chosen["ws_url"], token, file, kind or _kind(ctype), ctype,
                                  to, text, trust(h.deployment() or {})))
    except OSError as exc:
        raise MsgctlError(f"cannot reach {chosen['ws_url']}: {exc}", EXIT_NOT_RUNNING) from None
    if json_out:
        print(json.dumps(out))
        return
    media = out["media"]
    console.print(f"uploaded {file.name}: {media['size']} bytes, {media['content_type']}",
                  highlight=False)
    console.print(f"key  {media['key']}", highlight=False)
    console.print(f"url  {media['url']}", highlight=False, soft_wrap=True)
    if "sent" in out:
        console.print(f"sent to {out['sent']['conv']} as seq {out['sent']['seq']}",
                      highlight=False)
