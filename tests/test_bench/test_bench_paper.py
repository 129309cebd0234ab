"""asid-bench paper: measured figures beside the published ones; the checkpoints zoo, paper and seams read go
through the package's checked loading (one line, exit status 2)."""
from __future__ import annotations

import csv

import pytest
import torch

from asid_arch.bench.main import main as asid_bench

from helpers import write_images


@pytest.fixture(scope='module')
def prepared(tmp_path_factory):
    """A tiny ASID x2 (zero training steps) and two prepared x2 sets, one with a published figure (Urban100)
    and one without (Set5 has no traced ASID figure)."""
    from asid_arch.archs.asid_arch import ASID
    from asid_arch.data.prepare import prepare_bench

    root = tmp_path_factory.mktemp('paper')
    for name, seed in (('Set5', 0), ('Urban100', 5)):
        write_images(root / 'src' / name / 'HR', 2, size=(40, 48), seed=seed)
    prepare_bench([root / 'src' / 'Set5' / 'HR', root / 'src' / 'Urban100' / 'HR'], root / 'datasets', [2])
    torch.manual_seed(0)
    torch.save({'params': ASID(upscale=2, num_feat=16, num_blocks=1).state_dict()}, root / 'tiny.pth')
    return root


def reference_figures(checkpoint, gt_dir, lq_dir):
    """Mean PSNR/SSIM computed here: the reference protocol's averaged tiles, the package's MATLAB-style PSNR."""
    import numpy as np

    from basicsr.metrics import calculate_ssim
    from basicsr.utils import img2tensor, tensor2img

    from asid_arch.evaluation import paired_images
    from asid_arch.from_weights import network_from_file
    from asid_arch.metrics.asid_metric import calculate_psnr_matlab
    from asid_arch.utils.asid_tiling import PROTOCOL_OVERLAP as DEFAULT_OVERLAP
    from asid_arch.utils.asid_tiling import PROTOCOL_TILE as DEFAULT_TILE
    from asid_arch.utils.asid_tiling import tile_forward

    net, _ = network_from_file(checkpoint)
    psnr, ssim = [], []
    for _, gt, lq in paired_images(gt_dir, lq_dir):
        with torch.inference_mode():
            sr = tensor2img(tile_forward(net, img2tensor(lq.astype(np.float32) / 255.0)[None], 2, DEFAULT_TILE,
                                         DEFAULT_OVERLAP))
        psnr.append(calculate_psnr_matlab(sr, gt, 2))
        ssim.append(calculate_ssim(sr, gt, 2, input_order='HWC', test_y_channel=True))
    return float(np.mean(psnr)), float(np.mean(ssim))


def test_paper_table_sets_measured_beside_published(prepared, tmp_path, capsys):
    from asid_arch.bench.published import PUBLISHED, published

    out = tmp_path / 'out'
    code = asid_bench(['paper', '--checkpoint', f'ASID:2={prepared / "tiny.pth"}', '--datasets',
                       str(prepared / 'datasets'), '--sets', 'Set5', 'Urban100', '--out', str(out)])
    assert code == 0
    stdout, err = capsys.readouterr()
    assert 'not the released ASID' in err  # a tiny network is compared, and told so
    rows = {r['dataset']: r for r in csv.DictReader(open(out / 'paper.csv'))}
    assert sorted(rows) == ['Set5', 'Urban100']
    for name, row in rows.items():
        psnr, ssim = reference_figures(prepared / 'tiny.pth', prepared / 'datasets' / name / 'GTmod2',
                                       prepared / 'datasets' / name / 'LRbicx2')
        assert abs(float(row['psnr']) - psnr) < 1e-9 and abs(float(row['ssim']) - ssim) < 1e-9
        assert row['network'] == 'ASID (1 IDBs) x2' and row['images'] == '2'
    ref = published('ASID', 2, 'Urban100')
    assert ref in PUBLISHED and float(rows['Urban100']['psnr_published']) == ref.psnr
    assert abs(float(rows['Urban100']['psnr_diff']) - (float(rows['Urban100']['psnr']) - ref.psnr)) < 1e-9
    assert rows['Urban100']['source'] == str(ref.source) and 'https://' in rows['Urban100']['source']
    assert published('ASID', 2, 'Set5') is None
    assert rows['Set5']['psnr_published'] == rows['Set5']['psnr_diff'] == rows['Set5']['source'] == ''
    # the printed table: one row per model, scale and set, the missing figure shown as such, the source listed
    table = [line for line in stdout.splitlines() if line.startswith('| ASID |')]
    assert len(table) == 2
    set5, urban = sorted(table)
    assert '| not published |' in set5 and '| 33.35 |' in urban and urban.rstrip().endswith('| [1] |')
    assert f'[1] {ref.source}' in stdout
    assert (out / 'paper_vs_published.png').stat().st_size > 0 and (out / 'paper.md').read_text().count('| ASID |') == 2


def test_published_rows_name_their_sources():
    from asid_arch.bench.published import PUBLISHED

    assert PUBLISHED
    for row in PUBLISHED:
        assert row.source.what and row.source.url.startswith('https://')
        assert row.psnr is None or 20 < row.psnr < 45
        assert row.ssim is None or 0 < row.ssim < 1


@pytest.mark.parametrize('model', ['ASID', 'Omni-SR'])
def test_zoo_refuses_integer_weights_before_measuring(prepared, tmp_path, capsys, model):
    """Integer tensors would be converted silently by state_dict_from_file: refused by name, exit 2, nothing
    measured."""
    from asid_arch.bench.networks import build_model

    state = {k: v.round().to(torch.int64) for k, v in build_model(model, 2).state_dict().items()}
    torch.save({'params': state}, tmp_path / 'int.pth')
    out = tmp_path / 'out'
    code = asid_bench(['zoo', '--models', model, '--scales', '2', '--sizes', '64x48', '--repeats', '1', '--warmup', '0',
                       '--checkpoint', f'{model}:2={tmp_path / "int.pth"}', '--datasets', str(prepared / 'datasets'),
                       '--sets', 'Set5', '--out', str(out)])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert len(err.strip().splitlines()) == 1 and 'wrong number type' in err and 'int.pth' in err


@pytest.mark.parametrize('content', [b'not a checkpoint at all', None])
def test_seams_bad_checkpoint_is_one_line(tmp_path, capsys, content):
    path = tmp_path / 'bad.pth'
    if content is not None:
        path.write_bytes(content)
    assert asid_bench(['seams', '-m', str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and 'bad.pth' in err and 'Traceback' not in err


def test_seams_defaults_are_the_tilers(prepared, capsys):
    from asid_arch.utils.asid_tiling import PROTOCOL_OVERLAP as DEFAULT_OVERLAP
    from asid_arch.utils.asid_tiling import PROTOCOL_TILE as DEFAULT_TILE
    from asid_arch.utils.asid_tiling import RAMP_OVERLAP as BLENDED

    assert asid_bench(['seams', '-m', str(prepared / 'tiny.pth'), '--image',
                       str(prepared / 'src' / 'Set5' / 'HR' / 'img00.png')]) == 0
    out = capsys.readouterr().out
    assert f'averaged {DEFAULT_TILE} px tiles, overlap {DEFAULT_OVERLAP}:' in out
    assert f'blended {DEFAULT_TILE} px tiles, overlap {BLENDED}:' in out


@pytest.mark.parametrize('argv, message', [
    (['--checkpoint', 'ASID=m.pth'], 'is not MODEL:SCALE=PATH'),
    (['--checkpoint', 'EDSR:2=m.pth'], "unknown model 'EDSR'"),
    (['--checkpoint', 'ASID:2=nope.pth'], 'no such file'),
    (['--checkpoint', 'ASID:3=tiny.pth'], 'none of Set5, Urban100 is prepared at x3'),
])
def test_paper_refuses_unusable_arguments(prepared, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(prepared)
    assert asid_bench(['paper', *argv, '--datasets', 'datasets', '--sets', 'Set5', 'Urban100']) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err


def test_paper_refuses_weights_of_another_scale(prepared, tmp_path, capsys):
    from asid_arch.data.prepare import prepare_bench

    prepare_bench([prepared / 'src' / 'Set5' / 'HR'], tmp_path / 'datasets', [3])
    assert asid_bench(['paper', '--checkpoint', f'ASID:3={prepared / "tiny.pth"}', '--datasets',
                       str(tmp_path / 'datasets'), '--sets', 'Set5']) == 2
    assert 'holds x2 weights, not x3' in capsys.readouterr().err


def test_swinir_checkpoint_of_another_patch_size_loads(tmp_path):
    """SwinIR saves its attention masks with its weights, sized for its training patch: weights trained on 48 px
    LR patches (the CPU comparison's recipe) load into a network built for that size, not the released 64."""
    import torch

    from basicsr.archs.swinir_arch import SwinIR

    from asid_arch.bench.networks import load_checked

    net = SwinIR(upscale=2, in_chans=3, img_size=48, window_size=8, img_range=1., depths=[6, 6, 6, 6], embed_dim=60,
                 num_heads=[6, 6, 6, 6], mlp_ratio=2, upsampler='pixelshuffledirect', resi_connection='1conv')
    torch.save({'params': net.state_dict()}, tmp_path / 'swinir48.pth')
    loaded = load_checked('SwinIR-light', 2, tmp_path / 'swinir48.pth')
    assert loaded.network_name == 'SwinIR-light x2'
    x = torch.rand(1, 3, 20, 28)
    with torch.no_grad():
        assert torch.equal(loaded(x), loaded(x)) and loaded(x).shape == (1, 3, 40, 56)
