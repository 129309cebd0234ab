"""Checkpoint key layouts of ASID: the authors' released checkpoints (and neosr's, which use them) <-> this
package's keys, and what the weights tell about the variant they were trained as.

Kit file (``basicsr/archs/asid_layouts.py`` in a BasicSR checkout): it imports torch and the kit files
``../utils/asid_weights_loading.py`` and ``../utils/asid_errors.py`` (to read the weights an ``auto`` variant option
is resolved from). Omni-SR's key map (``omnisr_arch.py``) is built from the name parts shared with ASID
defined here.
"""
from __future__ import annotations

import re
from typing import AbstractSet, Dict, List, Mapping, Optional, Sequence, Tuple

from torch import Tensor

from ..utils.asid_errors import PretrainedWeightsError
from ..utils.asid_weights_loading import read_weights

# (released suffix, project suffix) inside the pieces shared with Omni-SR
LM_NAME_PARTS = (('fn.0.', 'conv_in.'), ('fn.2.', 'dwconv.'), ('fn.4.gate.1.', 'se.fc1.'), ('fn.4.gate.3.', 'se.fc2.'),
                 ('fn.5.', 'conv_out.'))
ATTN_NAME_PARTS = (('to_qkv.', 'qkv.'), ('to_v.', 'v.'), ('to_out.0.', 'proj.'),
                   ('rel_pos_bias.weight', 'rel_pos_bias_table'))
CA_NAME_PARTS = (('project_out.', 'proj.'), ('', ''))


def _idb_name_pairs() -> List[Tuple[str, str]]:
    """(released name, project name) prefixes inside one IDB, e.g. ``SLA1.attn.to_qkv.`` <-> ``sam_meso1.attn.qkv.``."""
    sam_parts = [('norm.', 'norm_attn.'), ('cnorm.', 'norm_ffn.'), ('gfn.', 'ffn.')]
    sam_parts += [(f'attn.{ref}', f'attn.{ours}') for ref, ours in ATTN_NAME_PARTS]
    pairs = []
    for u in (1, 2, 3):
        pairs += [(f'LB{u}.net.{ref}', f'lm{u}.{ours}') for ref, ours in LM_NAME_PARTS]
        for ref_sam, our_sam in (('SLA', 'sam_meso'), ('SGA', 'sam_global')):
            pairs += [(f'{ref_sam}{u}.{ref}', f'{our_sam}{u}.{ours}') for ref, ours in sam_parts]
        pairs.append((f'pw{u}.', f'fuse{u}.'))
    for k, part in ((1, 'meso'), (2, 'grid')):
        pairs += [(f'BlockC.canorm{k}.', f'cam.{part}.norm_attn.'), (f'BlockC.cnorm{k}.', f'cam.{part}.norm_ffn.'),
                  (f'BlockC.gfn{k}.', f'cam.{part}.ffn.')]
        pairs += [(f'BlockC.cttn{k}.{ref}', f'cam.{part}.attn.{ours}') for ref, ours in CA_NAME_PARTS]
    return pairs


IDB_NAME_PAIRS = _idb_name_pairs()
ESA_NAME_PAIRS = [('esa.conv1.', 'esa.squeeze.'), ('esa.conv_f.', 'esa.skip.'), ('esa.conv2.', 'esa.down.'),
                  ('esa.conv3.', 'esa.refine.'), ('esa.conv4.', 'esa.expand.'), ('res_end.', 'conv_out.')]
TOP_NAME_PAIRS = [('input.', 'conv_first.'), ('output.', 'conv_after_body.'), ('up.0.', 'upsampler.0.')]
_REFERENCE_BLOCK = re.compile(r'block(\d+)\.(residual_layer\.(?:0\.)?)?')
_PROJECT_BLOCK = re.compile(r'blocks\.(\d+)\.')


def rename_prefix(name: str, pairs: Sequence[Tuple[str, str]], reverse: bool = False) -> str:
    """Replace the longest matching prefix of ``name`` (``pairs`` are (released, project); ``reverse`` swaps)."""
    best = None
    for ref, ours in pairs:
        old, new = (ours, ref) if reverse else (ref, ours)
        if name.startswith(old) and (best is None or len(old) > len(best[0])):
            best = (old, new)
    return name if best is None else best[1] + name[len(best[0]):]


def is_reference_layout(state_dict: Mapping[str, Tensor]) -> bool:
    """True for the key layout of the authors' released checkpoints (``block0.residual_layer.0...``)."""
    return any(_REFERENCE_BLOCK.match(key) for key in state_dict)


def state_dict_from_reference(state_dict: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """Released-checkpoint keys -> project keys. Keys that match no rule are kept (strict loading names them)."""
    converted = {}
    for key, value in state_dict.items():
        match = _REFERENCE_BLOCK.match(key)
        if match is None:
            new = rename_prefix(key, TOP_NAME_PAIRS)
        else:
            pairs = IDB_NAME_PAIRS if match.group(2) else ESA_NAME_PAIRS
            new = f'blocks.{match.group(1)}.' + rename_prefix(key[match.end():], pairs)
        converted[new] = value
    return converted


def state_dict_to_reference(state_dict: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """Project keys -> released-checkpoint keys (the released ASID: attention computed in IDB 0)."""
    converted = {}
    for key, value in state_dict.items():
        match = _PROJECT_BLOCK.match(key)
        if match is None:
            new = rename_prefix(key, TOP_NAME_PAIRS, reverse=True)
        else:
            block, rest = match.group(1), key[match.end():]
            if rest.startswith(('esa.', 'conv_out.')):
                new = f'block{block}.' + rename_prefix(rest, ESA_NAME_PAIRS, reverse=True)
            else:
                body = 'residual_layer.0.' if block == '0' else 'residual_layer.'
                new = f'block{block}.{body}' + rename_prefix(rest, IDB_NAME_PAIRS, reverse=True)
        converted[new] = value
    return converted


# ----------------------------------------------------------------------------------------------
# Variants: what the weights tell
# ----------------------------------------------------------------------------------------------
POSITION_BIAS_KEY = re.compile(r'(blocks\.\d+\.sam_(meso|global)\d\.attn\.rel_pos_bias_table'
                               r'|block\d+\.residual_layer\.0\.S[LG]A\d\.attn\.rel_pos_bias\.weight)$')
AUTO = 'auto'  # a variant option to be read off the pretrained weights
VARIANT_OPTIONS = ('position_bias', 'channel_attention')  # ASID options that neosr's checkpoints decide
TEMPERATURE_KEY = re.compile(r'(blocks\.\d+\.cam\.(meso|grid)\.attn\.temperature'
                             r'|block\d+\.residual_layer\.(0\.)?BlockC\.cttn\d\.temperature)$')


def temperatures_untouched(state_dict: Mapping[str, Tensor]) -> bool:
    """Every channel-attention temperature is exactly 1.0 (its initial value)."""
    temps = [v for k, v in state_dict.items() if TEMPERATURE_KEY.match(k)]
    return bool(temps) and all(bool((t == 1).all()) for t in temps)


def detect_variant(state_dict: Mapping[str, Tensor]) -> Dict[str, object]:
    """``position_bias`` and ``channel_attention`` as far as ASID weights (either layout) tell them.

    No bias tables: trained without position bias (neosr's ``pe=False``). Channel temperatures all
    exactly 1.0 *and* no bias tables: neosr's defaults (its ``flash_attn=True`` never reads, so never
    trains, the temperature), so ``channel_attention='sdpa'``. With bias tables present, temperatures
    of exactly 1.0 say nothing certain (an untrained network has them too): ``'temperature'`` is
    assumed (callers let the user state ``'sdpa'``).
    """
    has_bias = any(POSITION_BIAS_KEY.match(k) for k in state_dict)
    sdpa = temperatures_untouched(state_dict) and not has_bias
    return {'position_bias': has_bias, 'channel_attention': 'sdpa' if sdpa else 'temperature'}


def variant_name(position_bias: bool, channel_attention: str) -> str:
    """Human words for a variant: 'the paper's', 'neosr defaults', ..."""
    if position_bias and channel_attention == 'temperature':
        return "paper (position bias, learned temperature)"
    if not position_bias and channel_attention == 'sdpa':
        return 'neosr defaults (no position bias, SDPA channel attention)'
    return (f'{"position bias" if position_bias else "no position bias"}, '
            f'{"SDPA channel attention" if channel_attention == "sdpa" else "learned temperature"}')


def position_bias_hint(missing: AbstractSet[str], unexpected: AbstractSet[str],
                       state_dict: Mapping[str, Tensor]) -> Optional[str]:
    """The option to set when the only mismatch between weights and an ASID is the position-bias tables
    (``missing``/``unexpected``: the keys the network lacks / the weights lack), or None."""
    if missing and all(POSITION_BIAS_KEY.match(k) for k in missing):
        sdpa = detect_variant(state_dict)['channel_attention'] == 'sdpa'
        also = ", channel_attention: sdpa (temperatures all 1.0: neosr's flash_attn=True)" if sdpa else ''
        return ('the weights have no position-bias tables: a neosr model trained with pe=False (its default); '
                f'set network_g: position_bias: false{also}')
    if unexpected and all(POSITION_BIAS_KEY.match(k) for k in unexpected):
        return 'the weights have position-bias tables: set network_g: position_bias: true'
    return None


def resolve_variant_options(opt: dict) -> Optional[str]:
    """``network_g: {type: ASID, position_bias: auto, channel_attention: auto}``: each ``auto`` replaced,
    in ``opt``, by what ``path: pretrain_network_g``'s weights tell (neosr's variants are recognised;
    see :func:`detect_variant`), or the paper's value without pretrained weights. Returns a line for
    the log (None when nothing was ``auto``). A file that cannot be read leaves the paper's values;
    loading it later reports why."""
    net_opt = opt.get('network_g') or {}
    autos = [k for k in VARIANT_OPTIONS if net_opt.get(k) == AUTO]
    if net_opt.get('type') != 'ASID' or not autos:
        return None
    found: Dict[str, object] = {'position_bias': True, 'channel_attention': 'temperature'}
    path = (opt.get('path') or {}).get('pretrain_network_g')
    source = 'no pretrain_network_g: the paper\'s'
    if path:
        try:
            found = detect_variant(read_weights(path, (opt['path'].get('param_key_g') or 'params'))[0])
            source = f'read off {path}'
        except PretrainedWeightsError:
            pass
    for key in autos:
        net_opt[key] = found[key]
    return 'network_g: ' + ', '.join(f'{k}: {net_opt[k]}' for k in autos) + f' ({source})'
