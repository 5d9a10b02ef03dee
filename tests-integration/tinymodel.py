"""A tiny random-weight llama-architecture GGUF for integration tests against llama-server.

The model produces gibberish, but it exercises the whole server: a byte-level BPE (gpt2-style)
tokenizer with a handful of merges, ChatML special tokens and a ChatML chat template, so
``/completion``, ``/tokenize``, ``/apply-template`` and ``/v1/chat/completions`` all work.

Generation only ever samples printable-ASCII tokens (bytes 0x20-0x7e and the merges): the
output projection gives every other token (control bytes, non-ASCII bytes, special tokens
including EOS and ``<|im_end|>``) a huge negative logit. So the output is always valid UTF-8
(llama-server holds back incomplete UTF-8 in streams, which random byte tokens would trigger:
a stream could then carry no text at all), every generated token is exactly one stream chunk,
and generation never stops by itself: it always runs to ``n_predict`` / ``max_tokens`` (or the
context limit, or a ``stop`` string), with or without ``--ignore-eos``.

Deterministic: the same arguments always produce a byte-identical file.

CLI: ``uv run python tests-integration/tinymodel.py OUT.gguf``
"""

from __future__ import annotations

import sys
from pathlib import Path

import gguf
import numpy as np

__all__ = [
    "BOS_TOKEN",
    "CHATML_TEMPLATE",
    "EOS_TOKEN",
    "IM_END_TOKEN",
    "IM_START_TOKEN",
    "N_CTX_TRAIN",
    "make_tiny_gguf",
]

N_EMBD = 64
N_LAYER = 2
N_HEAD = 4
N_HEAD_KV = 4
N_FF = 128
N_CTX_TRAIN = 512
SEED = 20240601

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
IM_START_TOKEN = "<|im_start|>"
IM_END_TOKEN = "<|im_end|>"

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Merges in rank order, written in plain text (a space is a real space); converted to the
# byte-level alphabet below. Every merge's parts must exist before the merge itself.
_MERGES_PLAIN: tuple[tuple[str, str], ...] = (
    (" ", "t"),
    ("h", "e"),
    (" ", "a"),
    ("i", "n"),
    ("r", "e"),
    ("o", "n"),
    (" t", "he"),
    ("e", "r"),
    (" ", "s"),
    ("a", "t"),
    (" ", "w"),
    ("o", "r"),
    ("e", "n"),
    ("l", "l"),
    (" ", "o"),
    ("i", "s"),
    (" ", "h"),
    ("e", "s"),
    ("i", "t"),
    ("h", "i"),
    ("e", "l"),
    ("he", "ll"),
    ("hell", "o"),
    (" ", "hello"),
    ("o", "k"),
)


def _bytes_to_unicode() -> dict[int, str]:
    """The GPT-2 byte -> printable unicode character table."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs, strict=True)}


def _vocab() -> tuple[list[str], list[int], list[str], dict[str, int]]:
    """Return (tokens, token_types, merges, special ids)."""
    table = _bytes_to_unicode()

    def enc(text: str) -> str:
        return "".join(table[b] for b in text.encode("utf-8"))

    tokens = [table[b] for b in range(256)]
    types = [int(gguf.TokenType.NORMAL)] * 256
    merges: list[str] = []
    for left, right in _MERGES_PLAIN:
        a, b = enc(left), enc(right)
        if a not in tokens or b not in tokens:
            raise AssertionError(f"merge part missing: {left!r} {right!r}")
        merges.append(f"{a} {b}")
        if a + b not in tokens:
            tokens.append(a + b)
            types.append(int(gguf.TokenType.NORMAL))

    special: dict[str, int] = {}
    for name in (BOS_TOKEN, EOS_TOKEN, IM_START_TOKEN, IM_END_TOKEN):
        special[name] = len(tokens)
        tokens.append(name)
        types.append(int(gguf.TokenType.CONTROL))
    return tokens, types, merges, special


_BIAS_DIM_VALUE = 16.0
_SUPPRESS_WEIGHT = -20.0
_PRINTABLE = frozenset(_bytes_to_unicode()[b] for b in range(0x20, 0x7F))


def _generable(token: str, token_type: int) -> bool:
    """Printable-ASCII normal tokens (byte tokens 0x20-0x7e and the merges built from them)."""
    return token_type == int(gguf.TokenType.NORMAL) and all(ch in _PRINTABLE for ch in token)


def make_tiny_gguf(path: str | Path, *, seed: int = SEED) -> Path:
    """Write the tiny model to ``path`` (parent directories are created) and return it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tokens, types, merges, special = _vocab()
    n_vocab = len(tokens)
    rng = np.random.default_rng(seed)

    def mat(rows: int, cols: int, scale: float) -> np.ndarray:
        # numpy shape (rows, cols) == ggml ne (cols, rows): weight maps cols -> rows.
        return (rng.standard_normal((rows, cols)) * scale).astype(np.float16)

    def norm(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    arch = "llama"
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name("airframe-tiny-random-llama")
    writer.add_file_type(int(gguf.LlamaFileType.MOSTLY_F16))
    writer.add_context_length(N_CTX_TRAIN)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYER)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD_KV)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(N_EMBD // N_HEAD)
    writer.add_rope_freq_base(10000.0)
    writer.add_vocab_size(n_vocab)

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(special[BOS_TOKEN])
    writer.add_eos_token_id(special[EOS_TOKEN])
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHATML_TEMPLATE)

    # Dimension 0 of the residual stream is a large constant (set in every token embedding and
    # only slightly disturbed by the small layer weights), so after the final RMS norm it is a
    # reliably large positive number. The output projection uses it as a per-token bias: every
    # token that is not printable ASCII gets a huge negative logit and is never sampled.
    embd = mat(n_vocab, N_EMBD, 0.5)
    embd[:, 0] = _BIAS_DIM_VALUE
    out = mat(n_vocab, N_EMBD, 0.5)
    out[:, 0] = [
        0.0 if _generable(t, ty) else _SUPPRESS_WEIGHT for t, ty in zip(tokens, types, strict=True)
    ]
    writer.add_tensor("token_embd.weight", embd)
    writer.add_tensor("output_norm.weight", norm(N_EMBD))
    writer.add_tensor("output.weight", out)
    for i in range(N_LAYER):
        p = f"blk.{i}."
        writer.add_tensor(p + "attn_norm.weight", norm(N_EMBD))
        writer.add_tensor(p + "attn_q.weight", mat(N_EMBD, N_EMBD, 0.1))
        writer.add_tensor(p + "attn_k.weight", mat(N_EMBD // N_HEAD * N_HEAD_KV, N_EMBD, 0.1))
        writer.add_tensor(p + "attn_v.weight", mat(N_EMBD // N_HEAD * N_HEAD_KV, N_EMBD, 0.1))
        writer.add_tensor(p + "attn_output.weight", mat(N_EMBD, N_EMBD, 0.1))
        writer.add_tensor(p + "ffn_norm.weight", norm(N_EMBD))
        writer.add_tensor(p + "ffn_gate.weight", mat(N_FF, N_EMBD, 0.1))
        writer.add_tensor(p + "ffn_up.weight", mat(N_FF, N_EMBD, 0.1))
        writer.add_tensor(p + "ffn_down.weight", mat(N_EMBD, N_FF, 0.1))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: tinymodel.py OUT.gguf")
    out = make_tiny_gguf(sys.argv[1])
    print(f"{out} ({out.stat().st_size} bytes)")
