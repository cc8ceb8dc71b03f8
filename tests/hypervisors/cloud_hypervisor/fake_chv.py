"""A stand-in for cloud-hypervisor's REST API, following its OpenAPI spec
(vmm/src/api/openapi/cloud-hypervisor.yaml) for the endpoints mxvm uses.

Status codes are the spec's: 204 for actions, 200 + JSON for vmm.ping / vm.info /
a hot-added device, 400 for a body that does not parse or lacks a required field, 404
when no VM is created (and for unknown paths), 405 when the VM is in the wrong state,
409 for a duplicate device, 500 for what CH refuses otherwise. Error bodies are a JSON
list of messages, as CH's error_response() writes them.

The "guest" is simulated: boot writes a line to the console file and binds the serial
socket; the power button writes the kernel's power-off line and then the VMM exits 0,
as cloud-hypervisor does when its guest powers off.

Run as a program it is a fake `cloud-hypervisor` executable: it parses
`--api-socket path=<sock>` and `--log-file <file>` and serves the API until vmm.shutdown
or a guest power-off. Knobs (environment): FAKE_CHV_CREATE_ERROR=<message> makes
vm.create fail with 500; FAKE_CHV_IGNORE_POWER_BUTTON=1 makes the guest ignore the
power button; FAKE_CHV_EXIT_AT_START=<code> exits before serving (a VMM that cannot start).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

VERSION = "v48.0-fake"
POWER_OFF_DELAY_S = 0.05
Handler = Callable[[web.Request], Awaitable[web.Response]]


def error(status: int, *messages: str) -> web.Response:
    return web.json_response(list(messages), status=status)


def no_content() -> web.Response:
    return web.Response(status=204)


class FakeVmm:
    """One VMM: at most one VM, in state None (not created), Created, Running or Shutdown."""

    def __init__(self, *, create_error: str | None = None, ignore_power_button: bool = False):
        self.create_error = create_error
        self.ignore_power_button = ignore_power_button
        self.config: dict[str, Any] | None = None
        self.state: str | None = None
        self.calls: list[str] = []
        self.exited = asyncio.Event()
        self._serial: socket.socket | None = None
        self._routes: dict[tuple[str, str], Handler] = {
            ("GET", "vmm.ping"): self.ping,
            ("PUT", "vmm.shutdown"): self.shutdown_vmm,
            ("GET", "vm.info"): self.info,
            ("PUT", "vm.create"): self.create,
            ("PUT", "vm.boot"): self.boot,
            ("PUT", "vm.shutdown"): self.shutdown,
            ("PUT", "vm.power-button"): self.power_button,
            ("PUT", "vm.delete"): self.delete,
            ("PUT", "vm.add-device"): self.add_device,
        }

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/api/v1/{endpoint}", self.dispatch)
        return app

    async def dispatch(self, request: web.Request) -> web.Response:
        endpoint = request.match_info["endpoint"]
        if endpoint not in {e for _, e in self._routes}:
            return error(404, "Not Found")
        handler = self._routes.get((request.method, endpoint))
        if handler is None:
            return error(400, "Bad Request")  # CH answers a wrong method so
        self.calls.append(endpoint)
        return await handler(request)

    # -- VMM ---------------------------------------------------------------------------

    async def ping(self, _: web.Request) -> web.Response:
        return web.json_response(
            {"version": VERSION, "build_version": VERSION, "pid": os.getpid(), "features": []}
        )

    async def shutdown_vmm(self, _: web.Request) -> web.Response:
        self._power_off(write_console=False)
        self.exited.set()
        return no_content()

    # -- VM ----------------------------------------------------------------------------

    async def info(self, _: web.Request) -> web.Response:
        if self.config is None:
            return error(404, "Error from API", "VM is not created")
        return web.json_response({"config": self.config, "state": self.state})

    async def create(self, request: web.Request) -> web.Response:
        body, problem = await _json_body(request)
        if problem is None:
            problem = _config_problem(body)
        if problem is not None:
            return error(400, "Failed to deserialize JSON", problem)
        if self.config is not None:
            return error(500, "Error from API", "The VM could not be created", "VM already created")
        if self.create_error:
            return error(500, "Error from API", "The VM could not be created", self.create_error)
        self.config, self.state = body, "Created"
        return no_content()

    async def boot(self, _: web.Request) -> web.Response:
        if self.config is None:
            return error(404, "Error from API", "The VM could not boot", "VM is not created")
        if self.state == "Running":
            return error(500, "Error from API", "The VM could not boot", "VM is already running")
        self.state = "Running"
        self._console("fake guest: booted\n")
        serial = self.config.get("serial") or {}
        if serial.get("mode") == "Socket":
            self._serial = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._serial.bind(serial["socket"])
            self._serial.listen(1)
        return no_content()

    async def shutdown(self, _: web.Request) -> web.Response:
        refused = self._not_running("The VM could not shut down")
        if refused is not None:
            return refused
        self._power_off(write_console=False)
        return no_content()

    async def power_button(self, _: web.Request) -> web.Response:
        refused = self._not_running("The button could not be triggered")
        if refused is not None:
            return refused
        if not self.ignore_power_button:
            asyncio.get_running_loop().call_later(POWER_OFF_DELAY_S, self._guest_powers_off)
        return no_content()

    async def delete(self, _: web.Request) -> web.Response:
        self._power_off(write_console=False)
        self.config, self.state = None, None
        return no_content()

    async def add_device(self, request: web.Request) -> web.Response:
        body, problem = await _json_body(request)
        if problem is None and not isinstance(body.get("path"), str):
            problem = "missing field `path`"
        if problem is not None:
            return error(400, "Failed to deserialize JSON", problem)
        if self.config is None:
            return error(404, "Error from API", "VM is not created")
        devices: list[dict[str, Any]] = self.config.setdefault("devices", [])
        if any(d.get("path") == body["path"] for d in devices):
            return error(409, "Error from API", f"device {body['path']} already exists")
        device = {"id": body.get("id") or f"_vfio{len(devices)}", **body}
        devices.append(device)
        if self.state != "Running":
            return no_content()  # cold-added: part of the config at the next boot
        return web.json_response({"id": device["id"], "bdf": f"0000:00:{4 + len(devices):02x}.0"})

    # -- the simulated guest -----------------------------------------------------------

    def _not_running(self, what: str) -> web.Response | None:
        if self.config is None:
            return error(404, "Error from API", what, "VM is not created")
        if self.state != "Running":
            return error(405, "Error from API", what, f"VM is not running ({self.state})")
        return None

    def _console(self, text: str) -> None:
        console = (self.config or {}).get("console") or {}
        if console.get("mode") == "File":
            with Path(console["file"]).open("a") as f:
                f.write(text)

    def _power_off(self, *, write_console: bool) -> None:
        if self.state == "Running" and write_console:
            self._console("reboot: Power down\n")
        if self.state == "Running":
            self.state = "Shutdown"
        if self._serial is not None:
            self._serial.close()
            self._serial = None

    def _guest_powers_off(self) -> None:
        self._power_off(write_console=True)
        self.exited.set()  # CH's VMM exits with its guest


async def _json_body(request: web.Request) -> tuple[dict[str, Any], str | None]:
    try:
        body = json.loads(await request.read())
    except ValueError as exc:
        return {}, str(exc)
    if not isinstance(body, dict):
        return {}, "expected a JSON object"
    return body, None


def _config_problem(body: dict[str, Any]) -> str | None:
    """The spec's required fields and enums for the parts of VmConfig mxvm sends."""
    if not isinstance(body.get("payload"), dict):
        return "missing field `payload`"
    cpus = body.get("cpus", {"boot_vcpus": 1, "max_vcpus": 1})
    if not all(isinstance(cpus.get(k), int) and cpus[k] >= 1 for k in ("boot_vcpus", "max_vcpus")):
        return "cpus needs boot_vcpus and max_vcpus >= 1"
    if "memory" in body and not isinstance(body["memory"].get("size"), int):
        return "missing field `size` in memory"
    modes = {"Off", "Pty", "Tty", "File", "Socket", "Null"}
    for key in ("serial", "console"):
        if key in body and body[key].get("mode") not in modes:
            return f"unknown variant in {key}.mode"
    if body.get("console", {}).get("mode") == "Socket":
        return "No socket option support for console device"
    return None


def parse_args(argv: list[str]) -> tuple[Path, Path | None]:
    api_socket: Path | None = None
    log_file: Path | None = None
    args = iter(argv)
    for arg in args:
        if arg == "--api-socket":
            value = next(args)
            api_socket = Path(value.removeprefix("path="))
        elif arg == "--log-file":
            log_file = Path(next(args))
    if api_socket is None:
        raise SystemExit("fake cloud-hypervisor: --api-socket is required")
    return api_socket, log_file


async def serve(vmm: FakeVmm, api_socket: Path) -> None:
    runner = web.AppRunner(vmm.app())
    await runner.setup()
    await web.UnixSite(runner, str(api_socket)).start()
    try:
        await vmm.exited.wait()
        await asyncio.sleep(0.05)  # let the last response leave
    finally:
        await runner.cleanup()


def main() -> None:
    api_socket, log_file = parse_args(sys.argv[1:])
    if log_file is not None:
        log_file.write_text(f"fake cloud-hypervisor {VERSION} pid {os.getpid()}\n")
    if code := os.environ.get("FAKE_CHV_EXIT_AT_START"):
        print("Error booting VM: cannot open /dev/kvm (fake)", file=sys.stderr)
        raise SystemExit(int(code))
    vmm = FakeVmm(
        create_error=os.environ.get("FAKE_CHV_CREATE_ERROR") or None,
        ignore_power_button=os.environ.get("FAKE_CHV_IGNORE_POWER_BUTTON") == "1",
    )
    api_socket.unlink(missing_ok=True)  # stale from an earlier run, as CH does
    asyncio.run(serve(vmm, api_socket))


if __name__ == "__main__":
    main()
