"""ASID and this package's Omni-SR keys in spandrel (the model loader of chaiNNer and ComfyUI).

Optional extra: ``pip install 'asid_arch[spandrel]'`` (or ``pip install spandrel``). Then::

    import asid_arch.integrations.spandrel
    asid_arch.integrations.spandrel.install()   # once per process; idempotent
    from spandrel import ModelLoader
    model = ModelLoader().load_from_file('net_g_latest.pth')   # an ImageModelDescriptor
    sr = model(lr)                          # (1, 3, H, W) in [0, 1] -> (1, 3, H*s, W*s)

``install()`` adds two architectures to spandrel's ``MAIN_REGISTRY`` through its public API
(``MAIN_REGISTRY.add(ArchSupport...)``; spandrel offers no plugin entry point):

* ``ASID``: ASID and ASID-D8 in every key layout this package reads (the authors' released files,
  BasicSR ``params``/``params_ema`` checkpoints, this package's ``blocks.N`` keys, neosr checkpoints
  with or without position bias). The variant (neosr's defaults or the paper's) is read off the
  weights (:func:`asid_arch.archs.asid_layouts.detect_variant`) and shown in the descriptor's tags.
* ``OmniSR (asid_arch keys)``: Omni-SR weights saved by this package (``groups.N`` keys) are renamed to
  the released layout and loaded by spandrel's own Omni-SR support.
"""
from __future__ import annotations

from typing import List

try:
    import spandrel
    from spandrel import Architecture, ArchSupport, ImageModelDescriptor, SizeRequirements, StateDict
    from spandrel.util import KeyCondition
except ImportError as err:  # the optional extra is not installed
    raise ImportError(f"asid_arch.integrations.spandrel needs spandrel ({err}): pip install 'asid_arch[spandrel]' "
                      '(or pip install spandrel)') from err

from ..archs.asid_arch import ASID
from ..archs.omnisr_arch import omnisr_state_dict_to_reference
from ..from_weights import network_from_state
from ..utils.asid_weights_loading import check_tensors

ASID_ID = 'ASID'
OMNISR_PACKAGE_ID = 'OmniSR (asid_arch keys)'
SPANDREL_OMNISR_ID = 'OmniSR'
# the keys that identify each layout: ASID's released / neosr layout or this package's; Omni-SR in this package's
ASID_DETECT = KeyCondition.has_any(
    KeyCondition.has_all('input.weight', 'up.0.weight', 'block0.residual_layer.0.LB1.net.fn.0.weight'),
    KeyCondition.has_all('conv_first.weight', 'upsampler.0.weight', 'blocks.0.lm1.conv_in.weight'))
OMNISR_PACKAGE_DETECT = KeyCondition.has_all('conv_first.weight', 'upsampler.0.weight',
                                             'groups.0.block.lm.conv_in.weight')


class ASIDArch(Architecture[ASID]):
    """spandrel's view of ASID: detection by key names, hyper-parameters from the weights."""

    def __init__(self) -> None:
        super().__init__(id=ASID_ID, name='ASID', detect=ASID_DETECT)

    def load(self, state_dict: StateDict) -> ImageModelDescriptor[ASID]:
        # spandrel read the file itself: its tensors are checked from their metadata before any element is
        # touched (a zero-stride view of billions of elements, views beyond their storage, sparse, meta, ...)
        check_tensors(state_dict, 'the state dict')
        state = ASID.convert_state_dict(state_dict)
        net, config = network_from_state(state, 'the state dict')
        tags: List[str] = [config.name, f'{config.num_feat}nf', f'{config.num_blocks}idb']
        if not config.position_bias:
            tags.append('no-pe')
        if config.channel_attention == 'sdpa':
            tags.append('sdpa-ca')
        return ImageModelDescriptor(
            net, state, architecture=self, purpose='SR' if config.upscale > 1 else 'Restoration', tags=tags,
            supports_half=True, supports_bfloat16=True, scale=config.upscale, input_channels=config.num_in_ch,
            output_channels=config.num_out_ch,
            size_requirements=SizeRequirements(minimum=1))  # the network pads any size itself


class OmniSRPackageArch(Architecture):
    """Omni-SR weights in this package's key layout, handed to spandrel's own Omni-SR support."""

    def __init__(self) -> None:
        super().__init__(id=OMNISR_PACKAGE_ID, name='Omni-SR', detect=OMNISR_PACKAGE_DETECT)

    def load(self, state_dict: StateDict):
        return spandrel.MAIN_REGISTRY[SPANDREL_OMNISR_ID].architecture.load(
            omnisr_state_dict_to_reference(state_dict))


def install(registry=None) -> List[str]:
    """Register ASID and the package's Omni-SR layout in ``registry`` (spandrel's ``MAIN_REGISTRY`` by
    default). Idempotent: returns the ids added by this call."""
    registry = spandrel.MAIN_REGISTRY if registry is None else registry
    added = registry.add(ArchSupport.from_architecture(ASIDArch()),
                         ArchSupport.from_architecture(OmniSRPackageArch()), ignore_duplicates=True)
    return [str(support.architecture.id) for support in added]
