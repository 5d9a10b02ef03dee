"""Shared by the examples: your backends, or airframe's wire emulator when none are configured.

Every example runs offline by default: it starts `airframe.testing.Emulator` (a real HTTP server
on 127.0.0.1 speaking the OpenAI, Anthropic, llama-server and Ollama protocols), points the
example's settings at it, and scripts what the "model" answers. Set `AVIONICS_CONFIG` to your
own settings file to run the same agent code against your backends instead.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from airframe.testing import Behaviour, Emulator
from avionics import AvionicsSettings
from avionics.demo import emulated_settings


@contextmanager
def backends(settings_toml: str, *script: Behaviour) -> Iterator[AvionicsSettings]:
    """The example's settings. With `AVIONICS_CONFIG` set: that file (your backends). Otherwise
    `settings_toml` with every provider served by the emulator, which answers with `script`
    (then "echo: <prompt>")."""
    if os.environ.get("AVIONICS_CONFIG"):
        yield AvionicsSettings()
        return
    with Emulator() as emu, tempfile.TemporaryDirectory() as tmp:
        emu.script(*script)
        yield AvionicsSettings.from_file(emulated_settings(emu, tmp, source=settings_toml))
