"""Finding and running ``tritonserver`` for `vidtrt serve`, the tests and the benchmark.

The binary comes from ``$VIDTRT_TRITONSERVER``, else the nvidia-pytriton
wheel (``pytriton/tritonserver/bin/tritonserver``, installed with --no-deps:
it declares numpy<2), else ``tritonserver`` on PATH (the NGC container).
The wheel ships the Python backend without its stub next to it: a backend
directory is assembled (the backend's files linked, the stub for this
Python copied in), as Triton looks for the stub in the backend's folder.

:class:`TritonServer` starts the server in a process group of its own and
stops the whole group (the server and its Python stubs) on ``stop()``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path


class ServingUnavailable(RuntimeError):
    """tritonserver or tritonclient is not installed."""


INSTALL_HINT = (
    "install the serve extra: pip install 'vidtrt[serve]' and, for the server, "
    "pip install --no-deps nvidia-pytriton==0.7.0 (or run inside NVIDIA's tritonserver container)"
)


def _pytriton_root() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(list(spec.submodule_search_locations)[0]) / "tritonserver"
    return root if root.is_dir() else None


def find_tritonserver() -> Path:
    """The tritonserver binary; ServingUnavailable (one line) when there is none."""
    given = os.environ.get("VIDTRT_TRITONSERVER")
    if given:
        if not Path(given).is_file():
            raise ServingUnavailable(f"VIDTRT_TRITONSERVER={given} is not a file")
        return Path(given)
    root = _pytriton_root()
    if root is not None and (root / "bin" / "tritonserver").is_file():
        return root / "bin" / "tritonserver"
    found = shutil.which("tritonserver")
    if found:
        return Path(found)
    raise ServingUnavailable(f"no tritonserver binary found; {INSTALL_HINT}")


def backend_directory(binary: Path, work_dir: Path) -> Path:
    """A --backend-directory holding python/ with the stub for this Python."""
    source = binary.parent.parent / "backends"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = binary.parent.parent / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        # The NGC container's layout: backends/python already holds its stub.
        if (source / "python" / "triton_python_backend_stub").is_file():
            return source
        raise ServingUnavailable(f"{binary} has no Python-backend stub for Python {version} (looked for {stub})")
    target = work_dir / "backends" / "python"
    target.mkdir(parents=True, exist_ok=True)
    for item in (source / "python").iterdir():
        if item.is_file() and not (target / item.name).exists():
            shutil.copy2(item, target / item.name)
    if not (target / "triton_python_backend_stub").exists():
        shutil.copy2(stub, target / "triton_python_backend_stub")
    return target.parent


def _library_path(binary: Path) -> str | None:
    """The wheel's bundled shared libraries (nvidia_pytriton.libs), when there."""
    libs = binary.parents[3] / "nvidia_pytriton.libs" if len(binary.parents) > 3 else None
    return str(libs) if libs is not None and libs.is_dir() else None


def stub_python_home(binary: Path, libs: str | None) -> str | None:
    """The prefix of the libpython the stub is linked with, when it has a standard library.

    The stub embeds the system's libpython; left alone it takes its standard
    library from the first ``python3`` on PATH, which may be another patch
    release (a venv of a pyenv Python): a mismatch that breaks parts of the
    standard library. vidtrt's packages come from the model's site_dirs
    either way (C extensions are compatible within a minor version)."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = binary.parent.parent / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file() or shutil.which("ldd") is None:
        return None
    env = dict(os.environ, LD_LIBRARY_PATH=libs or "")
    try:
        listing = subprocess.run(["ldd", str(stub)], capture_output=True, text=True, timeout=10, env=env).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in listing.splitlines():
        if f"libpython{version}" in line and "=>" in line:
            library = Path(line.split("=>")[1].split("(")[0].strip()).resolve()
            for prefix in library.parents:
                if (prefix / "lib" / f"python{version}" / "os.py").is_file():
                    return str(prefix)
    return None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class TritonServer:
    """A tritonserver on ``repository``. Ports left None are picked free.

    ``start()`` launches it; ``wait_ready(timeout)`` polls its HTTP health
    endpoint, failing with the end of its log if it exits or times out;
    ``stop()`` ends its process group (SIGTERM, then SIGKILL).
    ``log_path``: where its output goes (None: a file in ``work_dir``).
    """

    def __init__(
        self,
        repository: str | Path,
        work_dir: str | Path,
        *,
        address: str = "127.0.0.1",
        http_port: int | None = None,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
        log_path: str | Path | None = None,
        exit_timeout_s: int = 5,
        extra_args: list[str] | None = None,
    ):
        self.binary = find_tritonserver()
        self.repository = Path(repository)
        self.work_dir = Path(work_dir)
        self.address = address
        self.http_port = http_port or free_port()
        self.grpc_port = grpc_port or free_port()
        self.metrics_port = metrics_port or free_port()
        self.log_path = Path(log_path) if log_path else self.work_dir / "tritonserver.log"
        self.exit_timeout_s = exit_timeout_s
        self.extra_args = list(extra_args or [])
        self.process: subprocess.Popen | None = None

    @property
    def grpc_url(self) -> str:
        host = "127.0.0.1" if self.address == "0.0.0.0" else self.address
        return f"{host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        host = "127.0.0.1" if self.address == "0.0.0.0" else self.address
        return f"http://{host}:{self.metrics_port}/metrics"

    def command(self) -> list[str]:
        backends = backend_directory(self.binary, self.work_dir)
        return [
            str(self.binary),
            f"--model-repository={self.repository}",
            f"--backend-directory={backends}",
            f"--http-address={self.address}", f"--http-port={self.http_port}",
            f"--grpc-address={self.address}", f"--grpc-port={self.grpc_port}",
            "--allow-metrics=true", "--allow-gpu-metrics=false", "--allow-cpu-metrics=false",
            f"--metrics-address={self.address}", f"--metrics-port={self.metrics_port}",
            f"--exit-timeout-secs={self.exit_timeout_s}",
            "--strict-readiness=true",
            # No GPU here: pinned (page-locked) buffers need the CUDA driver; plain memory otherwise.
            "--pinned-memory-pool-byte-size=0",
        ] + self.extra_args  # fmt: skip

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        libs = _library_path(self.binary)
        if libs:
            env["LD_LIBRARY_PATH"] = f"{env['LD_LIBRARY_PATH']}:{libs}" if env.get("LD_LIBRARY_PATH") else libs
        home = stub_python_home(self.binary, libs)
        if home and "PYTHONHOME" not in env:
            env["PYTHONHOME"] = home
        return env

    def start(self, *, foreground: bool = False) -> subprocess.Popen:
        """Launches the server; ``foreground``: its output goes to this terminal."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        command = self.command()
        if foreground:
            self.process = subprocess.Popen(command, env=self.environment(), start_new_session=True)
        else:
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(
                    command, env=self.environment(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
        return self.process

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.grpc_url.split(':')[0]}:{self.http_port}/v2/health/ready", timeout=1) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"tritonserver exited with status {self.process.returncode} while loading the repository "
                    f"{self.repository}; its log ends:\n{self.log_tail()}"
                )
            if self.is_ready():
                return
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"tritonserver not ready after {timeout_s:g} s; its log ends:\n{self.log_tail()}")

    def kill(self) -> None:
        """Kills the server and its stubs at once (a crash, for the tests)."""
        self._signal_group(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(timeout=10)

    def stop(self, timeout_s: float = 15.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                pass
        # Stubs left behind by a server that died first are in the same group.
        self._signal_group(signal.SIGKILL)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def _signal_group(self, number: int) -> None:
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, number)
        except (ProcessLookupError, PermissionError):
            pass

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def metric_values(text: str, name: str) -> dict[str, float]:
    """Prometheus text → {labels text: value} of the samples of ``name``."""
    values = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            head, _, value = line.rpartition(" ")
            values[head[len(name) :]] = float(value)
    return values


def read_metric(url: str, name: str, model: str | None = None) -> float:
    """The sum of ``name`` over its labels (those of ``model`` only, when given)
    at a Prometheus endpoint; 0 when absent."""
    with urllib.request.urlopen(url, timeout=5) as response:
        values = metric_values(response.read().decode(), name)
    return sum(v for labels, v in values.items() if model is None or f'model="{model}"' in labels)
