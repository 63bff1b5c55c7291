"""Both llama.cpp builds run on the oldest CPU the project supports, not only on the one that
built them.

CI and development machines change CPU vendor from one day to the next (Intel with AMX, AMD Zen 4
without AVX-VNNI), so a build that used one machine's instructions dies with SIGILL on the next.
QEMU's user-mode emulator with ``-cpu Haswell`` offers x86-64-v3 (AVX2, FMA, F16C) and raises
SIGILL on anything newer (AVX-512, AVX-VNNI, AMX): exactly the portable baseline that
.ci/build_llama.sh builds for. A tiny quantized model generating a few tokens reaches the
quantized matrix kernels (tinyBLAS, the Q8_0 dot products) where such instructions would be.

.ci/test installs qemu-user and sets REQUIRE_PORTABILITY_CHECK=1, so in CI a missing emulator is a
failure, not a skip.
"""

from __future__ import annotations

import os
import platform
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fixtures.llama_worker import LlamaWorker, WorkerDied
from tests.fixtures.orpheus_gguf import audio_token_texts
from tests.fixtures.plugin_llama import free_port, spawn, stop, wait_http

QEMU = "qemu-x86_64"
HASWELL = [QEMU, "-cpu", "Haswell"]
TOKENS = 14  # two frames: enough to run the quantized kernels for prompt and generation
PROMPT = "<|audio|>tara: Portable.<|eot_id|>"

pytestmark = pytest.mark.portability

# AVX-VNNI's vpdpbusd: the instruction today's AMD CI machines lack and an AVX-VNNI build emits.
_VNNI_C = r"""
#include <immintrin.h>
#include <stdio.h>
int main(int argc, char **argv) {
    (void)argv;
    __m256i a = _mm256_set1_epi8((char)argc), b = _mm256_set1_epi8(3);
    __m256i c = _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), a, b);
    printf("%d\n", _mm256_extract_epi32(c, 0));
    return 0;
}
"""
# The same shape of program with AVX2 only: must run under the same emulated CPU.
_AVX2_C = _VNNI_C.replace("_mm256_set1_epi8((char)argc), b = _mm256_set1_epi8(3)",
                          "_mm256_set1_epi32(argc), b = _mm256_set1_epi32(3)").replace(
    "_mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), a, b)", "_mm256_mullo_epi32(a, b)")


@pytest.fixture(scope="module")
def qemu() -> list[str]:
    if platform.machine() != "x86_64":
        pytest.skip("the portable baseline is an x86-64 one")
    if shutil.which(QEMU) is None:
        message = f"{QEMU} is not installed (Debian: apt-get install qemu-user)"
        if os.environ.get("REQUIRE_PORTABILITY_CHECK"):
            pytest.fail(message)
        pytest.skip(message)
    return HASWELL


def _compile(tmp_path: Path, source: str, flag: str) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    src = tmp_path / f"probe{flag}.c"
    src.write_text(source)
    out = tmp_path / f"probe{flag}"
    subprocess.run([cc, "-O1", flag, str(src), "-o", str(out)], check=True, capture_output=True)
    return out


def test_the_emulated_cpu_refuses_avx_vnni_and_runs_avx2(qemu: list[str], tmp_path: Path) -> None:
    """The check can fail: an AVX-VNNI instruction is SIGILL under it, an AVX2 one is not."""
    vnni = subprocess.run([*qemu, str(_compile(tmp_path, _VNNI_C, "-mavxvnni"))],
                          capture_output=True)
    assert vnni.returncode == -signal.SIGILL, vnni.stderr.decode()[-500:]
    avx2 = subprocess.run([*qemu, str(_compile(tmp_path, _AVX2_C, "-mavx2"))], capture_output=True)
    assert avx2.returncode == 0 and avx2.stdout.strip() == b"3", avx2.stderr.decode()[-500:]


@pytest.fixture
def emulated_llama_server(qemu: list[str], llama_server_bin: Path, tiny_gguf_q8: Path,
                          tmp_path: Path) -> Iterator[str]:
    port = free_port()
    log_path = tmp_path / "llama-server.log"
    process = spawn([*qemu, str(llama_server_bin), "--model", str(tiny_gguf_q8), "--host",
                     "127.0.0.1", "--port", str(port), "--ctx-size", "512", "--parallel", "1",
                     "--threads", "1"], log_path)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/health", 300, process, log_path)
        yield base
    finally:
        stop(process, signal.SIGKILL)


def test_llama_server_generates_on_a_haswell(emulated_llama_server: str) -> None:
    reply = httpx.post(f"{emulated_llama_server}/v1/completions", timeout=300, json={
        "prompt": PROMPT, "max_tokens": TOKENS, "temperature": 0.0})
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["text"] == "".join(audio_token_texts()[:TOKENS])


def test_llama_cpp_python_generates_on_a_haswell(qemu: list[str], tiny_gguf_q8: Path) -> None:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    worker = LlamaWorker(tiny_gguf_q8, prefix=qemu, n_ctx=512, timeout=300)
    try:
        out = worker.call("complete", prompt=PROMPT, max_tokens=TOKENS, temperature=0.0)
    except WorkerDied as exc:
        pytest.fail(str(exc))
    finally:
        worker.close()
    assert out["choices"][0]["text"] == "".join(audio_token_texts()[:TOKENS])
