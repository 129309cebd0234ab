"""ASIDModel's speed options: mixed precision (train: amp), torch.compile (train: compile), their errors
and their state across a resume. CPU stand-ins for the CUDA paths (autocast, grad scaler, compile)."""
from __future__ import annotations

import copy

import pytest
import torch

from asid_arch.models.asid_model import ASIDModel
from asid_arch.pipeline.options_files import validate_options
from asid_arch.utils import asid_precision
from asid_arch.utils.asid_precision import autocast_dtype, compile_arguments

from helpers import run_module, tiny_train_options, write_yaml


def model_options(tmp_path, **train) -> dict:
    """Options for an in-process ASIDModel (what BasicSR's parse_options adds included)."""
    opt = tiny_train_options('amp', tmp_path, tmp_path)
    opt.update(is_train=True, dist=False, rank=0, world_size=1)
    opt['path'].update(models=str(tmp_path / 'models'), training_states=str(tmp_path / 'states'),
                       experiments_root=str(tmp_path))
    opt['train'].update(train)
    return opt


def fixed_batch(scale: int = 2):
    torch.manual_seed(1)
    gt = torch.rand(2, 3, 16 * scale, 16 * scale)
    lq = torch.nn.functional.interpolate(gt, scale_factor=1 / scale, mode='bicubic', align_corners=False)
    return {'lq': lq.clamp(0, 1), 'gt': gt}


def losses(model: ASIDModel, steps: int) -> list:
    batch = fixed_batch()
    values = []
    for i in range(steps):
        model.feed_data(batch)
        model.optimize_parameters(i + 1)
        values.append(float(model.log_dict['l_pix']))
    return values


@pytest.mark.parametrize('train', [{}, {'amp': 'bf16'}, {'compile': {'backend': 'aot_eager'}}],
                         ids=['fp32', 'bf16', 'compiled'])
@pytest.mark.slow
def test_loss_is_finite_and_decreases_on_a_fixed_batch(tmp_path, train):
    torch.manual_seed(0)
    model = ASIDModel(model_options(tmp_path, **train))
    values = losses(model, 6)
    assert all(torch.isfinite(torch.tensor(values))), values
    assert values[-1] < values[0], values
    assert model.output.dtype == torch.float32  # the loss is computed in float32


def test_bf16_forward_runs_in_bf16_and_validation_returns_float32(tmp_path):
    model = ASIDModel(model_options(tmp_path, amp='bf16'))
    seen = []
    model.net_g.conv_after_body.register_forward_hook(lambda m, a, out: seen.append(out.dtype))
    model.feed_data(fixed_batch())
    model.optimize_parameters(1)
    model.test()
    assert seen == [torch.bfloat16, torch.bfloat16]
    assert model.output.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in model.net_g.parameters())


def test_fp16_is_refused_off_cuda():
    with pytest.raises(ValueError, match='fp16 needs a CUDA GPU'):
        autocast_dtype('fp16', torch.device('cpu'))
    with pytest.raises(ValueError, match='not one of bf16, fp16'):
        autocast_dtype('float8', torch.device('cpu'))
    assert autocast_dtype(None, torch.device('cpu')) is None


def test_compile_arguments():
    assert compile_arguments(True) == {'dynamic': False}
    assert compile_arguments({'mode': 'max-autotune'}) == {'dynamic': False, 'mode': 'max-autotune'}
    assert compile_arguments(None) is None and compile_arguments(False) is None
    with pytest.raises(ValueError, match='unknown torch.compile argument'):
        compile_arguments({'modee': 'x'})
    with pytest.raises(ValueError, match='must be true, false or a dict'):
        compile_arguments('yes')


def test_option_checks_find_bad_speed_options(tmp_path):
    opt = tiny_train_options('x', tmp_path, tmp_path, **{'train.amp': 'fp16', 'train.compile': {'modee': 1}})
    problems = validate_options(opt)
    assert any('fp16 needs a CUDA GPU' in p for p in problems), problems
    assert any('unknown torch.compile argument' in p for p in problems), problems
    opt = tiny_train_options('x', tmp_path, tmp_path, model_type='SRModel', **{'train.amp': 'bf16'})
    assert any('only model_type: ASIDModel reads this' in p for p in validate_options(opt))


def test_fp16_grad_scaler_state_survives_a_resume(tmp_path, monkeypatch):
    """CPU stands in for CUDA (autocast fp16 and GradScaler both run on the CPU)."""
    monkeypatch.setattr(asid_precision, 'FP16_DEVICE_TYPES', ('cuda', 'cpu'))
    opt = model_options(tmp_path, amp='fp16')
    model = ASIDModel(copy.deepcopy(opt))
    assert model.scaler.is_enabled()
    model.scaler = torch.amp.GradScaler('cpu', init_scale=2.0**10, growth_interval=2)
    losses(model, 5)  # the scale grows every 2 good steps
    scale = model.scaler.get_scale()
    assert scale != 2.0**10
    model.save_training_state(epoch=0, current_iter=5)
    state = torch.load(tmp_path / 'states' / '5.state', weights_only=False)
    assert state['scaler']['scale'] == scale

    resumed = ASIDModel(copy.deepcopy(opt))
    assert resumed.scaler.get_scale() != scale
    resumed.resume_training(state)
    assert resumed.scaler.get_scale() == scale
    assert resumed.scaler.state_dict()['_growth_tracker'] == model.scaler.state_dict()['_growth_tracker']


@pytest.mark.slow
def test_bf16_training_run_through_the_pipeline(data, tmp_path):
    """asid-train with amp: bf16 and a compiled network: trains, validates, saves; fp16 exits 2 on CPU."""
    opt = tiny_train_options('ampcompile', data / 'train', data / 'valsrc', iters=2,
                             **{'train.amp': 'bf16', 'train.compile': {'backend': 'aot_eager'}})
    run = run_module('asid_arch.cli.train', ['-opt', str(write_yaml(tmp_path / 'a.yml', opt))], tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert 'Training with amp: bf16' in run.stderr and 'torch.compile: the first training iteration' in run.stderr
    assert (tmp_path / 'experiments' / 'ampcompile' / 'models' / 'net_g_2.pth').exists()
    params = torch.load(tmp_path / 'experiments' / 'ampcompile' / 'models' / 'net_g_2.pth', weights_only=True)['params']
    assert not any(k.startswith('_orig_mod') for k in params)

    opt = tiny_train_options('fp16', data / 'train', data / 'valsrc', iters=2, **{'train.amp': 'fp16'})
    refused = run_module('asid_arch.cli.train', ['-opt', str(write_yaml(tmp_path / 'f.yml', opt))], tmp_path)
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert 'fp16 needs a CUDA GPU' in refused.stderr and 'Traceback' not in refused.stderr


@pytest.mark.parametrize('preset,expected', [({}, 'PASSIVE'), ({'OMP_WAIT_POLICY': 'ACTIVE'}, 'ACTIVE'),
                                             ({'GOMP_SPINCOUNT': '1000'}, None)])
def test_tuning_sets_a_passive_openmp_wait_policy_unless_the_user_chose(preset, expected):
    """Set by the commands' tuning before torch loads libgomp (asid_arch.cpu_settings.tune_cpu); a user's own setting
    wins."""
    import os
    import subprocess
    import sys

    from helpers import REPO

    env = {k: v for k, v in os.environ.items() if k not in ('OMP_WAIT_POLICY', 'GOMP_SPINCOUNT')}
    env.update(preset, PYTHONPATH=str(REPO))
    code = "import os, asid_arch; asid_arch.tune_cpu(); import torch; print(os.environ.get('OMP_WAIT_POLICY'))"
    out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(expected)
