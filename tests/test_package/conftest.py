"""Fixtures of the released-weights tests: checkpoint bytes, and a mirror on 127.0.0.1 that the package is
pointed at (``ASID_WEIGHTS_BASE_URL``), with a fresh cache folder (``ASID_WEIGHTS_DIR``)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterator

import pytest
import torch

from asid_arch.archs.asid_arch import asid, asid_d8
from asid_arch.archs.asid_layouts import state_dict_to_reference
from asid_arch.archs.omnisr_arch import OmniSR
from asid_arch.released import BASE_URL_ENV, CACHE_DIR_ENV

from linear_upscaler import linear_upscaler_state
from mirror import Mirror


def saved(state: Dict[str, torch.Tensor], path: Path) -> bytes:
    torch.save(state, path)
    return path.read_bytes()


@pytest.fixture(scope='session')
def files(tmp_path_factory) -> Dict[str, bytes]:
    """Checkpoint bytes, released layout: 'asid_x2' (ASID x2 weights that up-scale better than bicubic, see
    linear_upscaler.py), 'random' and 'zero' (ASID x2 shapes), 'asid_x3', 'asid_d8_x2' and 'omnisr' (random)."""
    folder = tmp_path_factory.mktemp('weights')
    torch.manual_seed(0)
    net = asid(upscale=2)
    return {'asid_x2': saved(linear_upscaler_state(2), folder / 'a.pth'),
            'random': saved(state_dict_to_reference(net.state_dict()), folder / 'r.pth'),
            'zero': saved(state_dict_to_reference({k: torch.zeros_like(v) for k, v in net.state_dict().items()}),
                          folder / 'z.pth'),
            'asid_x3': saved(state_dict_to_reference(asid(upscale=3).state_dict()), folder / 'a3.pth'),
            'asid_d8_x2': saved(state_dict_to_reference(asid_d8(upscale=2).state_dict()), folder / 'd.pth'),
            'omnisr': saved(OmniSR(upscale=2).state_dict(), folder / 'o.pth')}


@pytest.fixture
def mirror(monkeypatch, tmp_path) -> Iterator[Mirror]:
    server = Mirror()
    monkeypatch.setenv(BASE_URL_ENV, server.url)
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / 'cache'))
    yield server
    server.stop()
