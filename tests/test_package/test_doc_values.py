"""Figures and defaults the documents state that the code decides: read from the page, compared with the code
(or the option file) they describe."""
from __future__ import annotations

import re

import yaml

from helpers import REPO

GETTING_STARTED = REPO / 'docs' / 'getting_started.md'
INFERENCE = REPO / 'docs' / 'inference.md'
DEMO_OPTIONS = REPO / 'options' / 'train' / 'ASID' / 'demo_ASID_SRx2_cpu.yml'


def test_demo_recipe_as_the_option_file_says():
    text = GETTING_STARTED.read_text()
    opt = yaml.safe_load(DEMO_OPTIONS.read_text())
    lr, eta_min = re.search(r'AdamW (\S+) with cosine decay to (\S+?),', text).groups()
    assert opt['train']['optim_g']['type'] == 'AdamW'
    assert float(lr) == opt['train']['optim_g']['lr']
    assert float(eta_min) == opt['train']['scheduler']['eta_min']
    iterations, every = map(int, re.search(r'(\d+) iterations, validation every (\d+)', text).groups())
    assert (iterations, every) == (opt['train']['total_iter'], opt['val']['val_freq'])


def test_demo_pictures_as_the_data_step_makes_them():
    """The pictures counted and the ones named as too small for a sub-image are those of asid-prepare demo."""
    import skimage.data

    from asid_arch.data.prepare import DEMO_CROP, DEMO_TRAIN

    text = GETTING_STARTED.read_text()
    count = int(re.search(r'(\d+) training pictures', text).group(1))
    named_small = set(re.findall(r'`(\w+)` \(\d+ x \d+\)', text))

    def shape(name: str) -> tuple:
        picture = getattr(skimage.data, name)()
        return (picture[0] if isinstance(picture, tuple) else picture).shape  # stereo_motorcycle: a stereo pair

    small = {name for name in DEMO_TRAIN if min(shape(name)[:2]) < DEMO_CROP}
    assert count == len(DEMO_TRAIN) and named_small == small
    assert f'the other {count - len(small)}' in text
    assert f'sub-images of {DEMO_CROP} px' in text


def test_seams_table_as_its_command_runs():
    """The tiles of the table are those of the command shown (its defaults are the protocol's 64 px tiles)."""
    from asid_arch.utils.asid_tiling import RAMP_OVERLAP

    text = INFERENCE.read_text()
    tile, averaged = map(int, re.search(r'`asid-bench seams -m <checkpoint> --tile (\d+) --overlap-averaged (\d+)`',
                                        text).groups())
    assert f'| {tile} px tiles, overlap {RAMP_OVERLAP}, blended (`--tile {tile}`' in text
    assert f'| {tile} px tiles, overlap {averaged}, averaged |' in text
