"""The viser app behind ``fourreal view`` (docs/viewing.md).

Each browser tab gets a render thread: while its camera moves, or time plays, it renders
at the interactive size (JPEG); once nothing has changed for ``settle_s`` it renders once
more at full size (PNG) and then idles. All rendering goes through the scene's own
rasterizer (the run recipe's backend) via :class:`~fourreal_viewer.render.FrameRenderer`.
"""

from __future__ import annotations

import contextlib
import io
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from fourreal_core.errors import FourRealError

from .render import FrameRenderer, fov_y, pose_to_viewmat, size_for, viewmat_to_pose
from .source import Loaded, ViewSource, canonical_time


@dataclass
class ViewOptions:
    host: str = "127.0.0.1"
    port: int = 8080
    height: Optional[int] = None  # full-size rows (default: the reference camera's, the training size)
    interactive_height: int = 144  # rows while the camera moves or time plays
    fps: float = 8.0  # 1x speed plays the reference frames at this rate
    settle_s: float = 0.3  # still for this long -> one full-size frame
    poll_s: float = 2.0  # how often to look for a newer scene in the run


def check_port_free(host: str, port: int) -> None:
    """Refuse a busy port (viser itself would silently take the next free one)."""
    if not 0 < port < 65536:
        raise FourRealError(f"--port {port}: not a TCP port (1-65535)")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise FourRealError(f"--host {host}: cannot resolve ({exc.strerror})") from None
    family, _, _, _, addr = infos[0]
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
        s.bind(addr)
    except OSError as exc:
        raise FourRealError(f"{host}:{port}: cannot listen there ({exc.strerror}); "
                            "is another server using the port? choose another with --port") from None
    finally:
        s.close()


def _quiet():
    """viser prints a banner and a 'server stopped' line (through rich's global console, also
    from its server thread); fourreal says one line itself."""
    import rich

    rich.get_console().quiet = True
    return contextlib.redirect_stdout(io.StringIO())


class ViewerApp:
    def __init__(self, source: ViewSource, opts: ViewOptions, say: Callable[[str], None] = print) -> None:
        self.source = source
        self.opts = opts
        self.say = say
        self.loaded: Loaded = source.load()
        self.renderer = FrameRenderer(self.loaded.scene, self.loaded.rasterizer)
        self.version = 0
        self._stop = threading.Event()
        self._clients: dict[int, "_ClientLoop"] = {}
        self._frusta: list[Any] = []
        self._hidden: dict[int, Any] = {}  # client id -> frustum hidden while that client looks through it
        self.server = None
        self.status = None
        self.last_frame: dict[int, dict] = {}

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> str:
        import viser

        o = self.opts
        check_port_free(o.host, o.port)
        with _quiet():
            server = viser.ViserServer(host=o.host, port=o.port, label="fourreal", verbose=False)
        if server.get_port() != o.port:  # taken between the check and viser's bind
            with _quiet():
                server.stop()
            raise FourRealError(f"{o.host}:{o.port}: the port was taken while starting; choose another with --port")
        self.server = server
        server.gui.configure_theme(control_layout="fixed", control_width="medium", show_share_button=False,
                                   dark_mode=False)
        self._build_gui()
        self._build_scene()
        server.on_client_connect(self._on_connect)
        server.on_client_disconnect(self._on_disconnect)
        self._threads = [threading.Thread(target=self._play_loop, daemon=True, name="fourreal-view-play"),
                         threading.Thread(target=self._poll_loop, daemon=True, name="fourreal-view-poll")]
        for th in self._threads:
            th.start()
        host = "localhost" if o.host in ("0.0.0.0", "::") else o.host
        return f"http://{host}:{o.port}"

    def stop(self) -> None:
        self._stop.set()
        loops = list(self._clients.values())
        for loop in loops:
            loop.stopped = True
            loop.wake.set()
        # wait for the render/play threads to leave torch before the interpreter exits: a
        # thread still inside a torch op at exit aborts the process ("terminate called ...")
        for th in [*getattr(self, "_threads", []), *(loop.thread for loop in loops)]:
            if th.is_alive() and th is not threading.current_thread():
                th.join(timeout=10)
        if self.server is not None:
            with _quiet():
                self.server.stop()

    def serve_forever(self) -> None:
        while not self._stop.is_set():
            time.sleep(0.2)

    # ----------------------------------------------------------------- GUI
    def _build_gui(self) -> None:
        gui = self.server.gui
        scene = self.loaded.scene
        t_c = canonical_time(scene)
        self.t_c = t_c
        with gui.add_folder("time"):
            self.time = gui.add_slider("time", min=0.0, max=1.0, step=0.001, initial_value=t_c,
                                       marks=((0.0, "0"), (t_c, "c"), (1.0, "1")),
                                       hint="t in [0,1]; c marks the canonical frame's time t_c")
            self.play = gui.add_button("play", hint="play / pause time")
            self.speed = gui.add_slider("speed", min=0.1, max=4.0, step=0.1, initial_value=1.0,
                                        hint=f"1x plays the reference frames at {self.opts.fps:g} frames/s")
            self.canonical = gui.add_checkbox("canonical", initial_value=False,
                                              hint="show the canonical (undeformed) Gaussians")
            self.to_tc = gui.add_button("go to t_c")
        with gui.add_folder("cameras"):
            self.show_cameras = gui.add_checkbox("show cameras", initial_value=True)
            self.jump_ref = gui.add_button("reference camera")
            self.jump_frz = []
            if scene.freeze_cameras is not None:
                for i in range(len(scene.freeze_cameras)):
                    self.jump_frz.append(gui.add_button(f"freeze-time {i}"))
        self.status = gui.add_markdown("starting")
        self.playing = False

        @self.play.on_click
        def _(_event) -> None:
            self.playing = not self.playing
            self.play.label = "pause" if self.playing else "play"
            self._wake_all()

        @self.to_tc.on_click
        def _(_event) -> None:
            self.time.value = self.t_c
            self._wake_all()

        for h in (self.time, self.speed, self.canonical):
            h.on_update(lambda _e: self._wake_all())

        @self.show_cameras.on_update
        def _(_event) -> None:
            self._update_frusta_visibility()

        @self.jump_ref.on_click
        def _(event) -> None:
            if event.client is not None and scene.reference_camera is not None:
                self.jump(event.client, self.loaded.scene.reference_camera[:1], None)

        for i, b in enumerate(self.jump_frz):
            b.on_click(lambda event, i=i: event.client is not None and self.jump(
                event.client, self.loaded.scene.freeze_cameras[i:i + 1], ("freeze", i)))

    def _wake_all(self) -> None:
        for loop in list(self._clients.values()):
            loop.wake.set()

    # ----------------------------------------------------------------- scene objects
    def _scene_scale(self) -> float:
        s = self.loaded.scene
        cams = [c for c in (s.reference_camera, s.freeze_cameras) if c is not None]
        if not cams:
            return 0.3
        from fourreal_formats.cameras import look_at_target

        ref = cams[0][:1]
        target = look_at_target(s, ref)
        centres = torch.cat([torch.linalg.inv(c.viewmats.cpu())[:, :3, 3] for c in cams])
        return max(float((centres - target).norm(dim=-1).median()) * 0.08, 1e-3)

    def _build_scene(self) -> None:
        s = self.loaded.scene
        srv = self.server
        for h in self._frusta:
            h.remove()
        self._frusta = []
        self._hidden.clear()
        scale = self._scene_scale()
        if s.reference_camera is not None:
            from fourreal_stages.export import scene_up

            up = scene_up(s, s.reference_camera[:1])
            srv.scene.set_up_direction(tuple(float(x) for x in up))
        inputs = self.loaded.inputs

        def add(name: str, cam, image, color, key) -> None:
            wxyz, pos = viewmat_to_pose(cam.viewmats[0])
            h = srv.scene.add_camera_frustum(name, fov=fov_y(cam), aspect=cam.width / cam.height, scale=scale,
                                             image=image, wxyz=wxyz, position=pos, color=color,
                                             visible=bool(self.show_cameras.value))
            h.on_click(lambda event, cam=cam, key=key: self.jump(event.client, cam, key))
            h.key = key
            self._frusta.append(h)

        if s.freeze_cameras is not None:
            for i in range(len(s.freeze_cameras)):
                img = inputs.freeze_time[i] if inputs.freeze_time is not None else None
                add(f"/cameras/freeze_time/{i:03d}", s.freeze_cameras[i:i + 1], img, (40, 110, 220), ("freeze", i))
        if s.reference_camera is not None:
            self._ref_index = None
            add("/cameras/reference", s.reference_camera[:1], self._reference_image(), (220, 60, 40), None)

    def _reference_image(self) -> Optional[np.ndarray]:
        ref = self.loaded.inputs.reference
        s = self.loaded.scene
        if ref is None or s.times is None:
            return None
        k = int(torch.argmin((s.times - float(self.time.value)).abs()))
        self._ref_index = k
        return ref[k]

    def _update_reference_image(self) -> None:
        ref = self.loaded.inputs.reference
        s = self.loaded.scene
        if ref is None or s.times is None or not self._frusta:
            return
        k = int(torch.argmin((s.times - float(self.time.value)).abs()))
        if k != getattr(self, "_ref_index", None):
            self._ref_index = k
            for h in self._frusta:
                if h.key is None:
                    h.image = ref[k]

    def _update_frusta_visibility(self) -> None:
        hidden = {id(h) for h in self._hidden.values()}
        for h in self._frusta:
            h.visible = bool(self.show_cameras.value) and id(h) not in hidden

    # ----------------------------------------------------------------- cameras
    def jump(self, client, cam, key) -> None:
        """Put ``client``'s view at camera ``cam`` (its pose and vertical field of view); the
        frustum drawn there is hidden until the view moves away."""
        if client is None:
            return
        from fourreal_formats.cameras import look_at_target

        s = self.loaded.scene
        wxyz, pos = viewmat_to_pose(cam.viewmats[0])
        target = look_at_target(s, cam).numpy()
        c2w = torch.linalg.inv(cam.viewmats[0].detach().cpu().double())
        with client.atomic():
            client.camera.up_direction = (-c2w[:3, 1]).numpy()  # the camera's own up: no roll
            client.camera.fov = fov_y(cam)
            client.camera.wxyz = wxyz
            client.camera.position = pos
            client.camera.look_at = target
        for h in self._frusta:
            if h.key == key:
                self._hidden[client.client_id] = h
        loop = self._clients.get(client.client_id)
        if loop is not None:
            loop.at_camera = (np.asarray(pos, dtype=np.float64), self._scene_scale())
        self._update_frusta_visibility()
        self._wake_all()

    def _on_connect(self, client) -> None:
        loop = _ClientLoop(self, client)
        self._clients[client.client_id] = loop
        client.camera.on_update(lambda _cam: loop.on_camera())
        s = self.loaded.scene
        if s.reference_camera is not None:
            self.jump(client, s.reference_camera[:1], None)
        loop.thread.start()

    def _on_disconnect(self, client) -> None:
        loop = self._clients.pop(client.client_id, None)
        if loop is not None:
            loop.stopped = True
            loop.wake.set()
        if self._hidden.pop(client.client_id, None) is not None:
            self._update_frusta_visibility()

    def moved_away(self, client_id: int) -> None:
        if self._hidden.pop(client_id, None) is not None:
            self._update_frusta_visibility()

    # ----------------------------------------------------------------- background threads
    def _loop_seconds(self) -> float:
        s = self.loaded.scene
        n = len(s.times) if s.times is not None else 24
        return max(n / max(self.opts.fps, 1e-3), 1.0)

    def _play_loop(self) -> None:
        last = time.perf_counter()
        while not self._stop.is_set():
            time.sleep(0.03)
            now = time.perf_counter()
            dt, last = now - last, now
            if self.playing:
                t = float(self.time.value) + dt * float(self.speed.value) / self._loop_seconds()
                self.time.value = round(t % 1.0, 3)
                self._wake_all()
            self._update_reference_image()

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.opts.poll_s):
            try:
                if not self.source.changed(self.loaded):
                    continue
                loaded = self.source.load()
            except Exception:  # a stage mid-rename, or a half-written file: try again next poll
                continue
            self.loaded = loaded
            self.renderer = FrameRenderer(loaded.scene, loaded.rasterizer)
            self.version += 1
            self._build_scene()
            for c in self.server.get_clients().values():
                c.add_notification("fourreal", f"new scene: {loaded.manifest}", auto_close_seconds=5.0)
            self._wake_all()

    def full_height(self) -> int:
        if self.opts.height:
            return int(self.opts.height)
        ref = self.loaded.scene.reference_camera
        return int(ref.height) if ref is not None else 360


class _ClientLoop:
    """One browser tab: interactive frames while things change, one full frame when still."""

    def __init__(self, app: ViewerApp, client) -> None:
        self.app = app
        self.client = client
        self.wake = threading.Event()
        self.stopped = False
        self.last_change = time.perf_counter()
        self.at_camera = None
        self.thread = threading.Thread(target=self.run, daemon=True, name=f"fourreal-view-{client.client_id}")
        self.frames = 0
        self._fps_t = time.perf_counter()
        self.fps = 0.0

    def on_camera(self) -> None:
        self.last_change = time.perf_counter()
        if self.at_camera is not None:
            pos, scale = self.at_camera
            if np.linalg.norm(np.asarray(self.client.camera.position) - pos) > 0.05 * scale:
                self.at_camera = None
                self.app.moved_away(self.client.client_id)
        self.wake.set()

    def _state(self) -> tuple:
        cam = self.client.camera
        app = self.app
        return (tuple(np.round(np.asarray(cam.wxyz, dtype=np.float64), 6)),
                tuple(np.round(np.asarray(cam.position, dtype=np.float64), 6)),
                round(float(cam.fov), 6), round(float(cam.aspect), 4),
                round(float(app.time.value), 6), bool(app.canonical.value), app.version)

    def run(self) -> None:
        app = self.app
        last_state, full_done = None, True
        while not (self.stopped or app._stop.is_set()):
            try:
                state = self._state()
            except Exception:  # camera not known yet
                self.wake.wait(0.05)
                self.wake.clear()
                continue
            now = time.perf_counter()
            if state != last_state:  # camera, time, canonical toggle or scene changed
                self.last_change = now
                self.render(state, interactive=True)
                last_state, full_done = state, False
                continue
            if not full_done and now - self.last_change >= app.opts.settle_s and not app.playing:
                self.render(state, interactive=False)
                full_done = True
                continue
            self.wake.wait(0.05)
            self.wake.clear()

    def render(self, state: tuple, interactive: bool) -> None:
        app = self.app
        wxyz, pos, fov, aspect, t, canonical, version = state
        full = app.full_height()
        h = min(app.opts.interactive_height, full) if interactive else full
        w, h = size_for(h, aspect)
        t0 = time.perf_counter()
        img = app.renderer.render(pose_to_viewmat(wxyz, pos), fov, w, h, t, canonical)
        if self.stopped:
            return
        self.client.scene.set_background_image(img, format="jpeg" if interactive else "png", jpeg_quality=85)
        dt = time.perf_counter() - t0
        self.frames += 1
        now = time.perf_counter()
        if now - self._fps_t > 1.0:
            self.fps = self.frames / (now - self._fps_t)
            self.frames, self._fps_t = 0, now
        kind = "interactive" if interactive else "full"
        app.last_frame[self.client.client_id] = {"kind": kind, "width": w, "height": h, "time": t,
                                                 "canonical": canonical, "seconds": dt}
        if not interactive and app.status is not None:
            app.status.content = (f"frame: {kind} {w}x{h}, t={t:.3f}{' canonical' if canonical else ''}, "
                                  f"{dt * 1000:.0f} ms, {len(app.loaded.scene.model)} Gaussians")


def view(path: Path, opts: ViewOptions, device: Optional[str] = None, say: Callable[[str], None] = print) -> None:
    """``fourreal view``: serve until Ctrl-C (or SIGTERM)."""
    try:
        import viser  # noqa: F401
    except ImportError:
        raise FourRealError("fourreal view needs viser: pip install -e '.[view]'") from None
    for flag, value in (("--height", opts.height), ("--interactive-height", opts.interactive_height)):
        if value is not None and value < 1:
            raise FourRealError(f"{flag} {value}: must be >= 1")
    if not opts.fps > 0:
        raise FourRealError(f"--fps {opts.fps}: must be > 0")
    source = ViewSource(path, device=device)
    check_port_free(opts.host, opts.port)  # before the (slower) scene load
    app = ViewerApp(source, opts, say=say)
    url = app.start()
    say(f"fourreal view: {app.loaded.manifest} at {url} (Ctrl-C to stop)")
    try:
        app.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        app.stop()
    say("fourreal view: stopped")
