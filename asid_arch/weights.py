"""The authors' released weights by name: ``asid-sr photo.jpg -o out/ -m asid_x4``.

Six names, one per released checkpoint of github.com/saturnian77/ASID (ASID and ASID-D8 at x2, x3, x4),
each with the network it must load into (architecture, scale, parameter count) and its URL pinned to a
commit of that repository. A name is downloaded once into a cache folder (:func:`cache_folder`):

* with torch.hub's ``download_url_to_file`` (progress bar on stderr), into a temporary file beside the
  final one; the final name is given only to a complete file that loaded strictly into the named
  network through the package's checked loading path (:func:`asid_arch.checkpoint.state_dict_from_file`,
  then :func:`asid_arch.checkpoint.network_from_state`): a broken transfer or a wrong file leaves
  nothing under the final name and raises :class:`WeightsDownloadError` / :class:`PretrainedWeightsError`
  with one line;
* concurrent downloads of the same cache folder wait for each other (an ``flock`` on the folder), and
  temporaries of a killed download are removed by the next one;
* offline, the error names the URL that failed and the path where the file can be placed by hand;
* a file already in the cache is checked the same way each time it is used (and refused, not deleted:
  the user may have placed it there).

Environment: ``ASID_WEIGHTS_BASE_URL`` replaces everything before ``train_logs/...`` in the URLs (a mirror
of the authors' repository tree: air-gapped sites, tests); ``ASID_WEIGHTS_DIR`` replaces the cache folder
(default: torch.hub's ``checkpoints`` folder, ``$TORCH_HOME/hub/checkpoints``, ``~/.cache/torch/hub/checkpoints``).
"""
from __future__ import annotations

import contextlib
import http.client
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, Optional, Union

from .console import shown
from .utils.asid_errors import PretrainedWeightsError

BASE_URL_ENV = 'ASID_WEIGHTS_BASE_URL'
CACHE_DIR_ENV = 'ASID_WEIGHTS_DIR'
UPSTREAM = 'https://raw.githubusercontent.com/saturnian77/ASID'  # serves the raw bytes of a file at a commit
COMMIT_FIRST = 'eb5af3b4ec923b5fb3e97917fa9cde219ad09a2d'  # ASID x2, ASID-D8 x3 and x4
COMMIT_LATER = 'e488abcf502bc514dac404a6c2f547956b282ea9'  # ASID x3 and x4, ASID-D8 x2
RELEASED_FILE = 'checkpoints/epoch0_ASID.pth'  # what every released folder holds
DOWNLOAD_SUFFIX = '.download'  # the complete but unchecked transfer: '.{name}.download'
COMMIT_IN_NAME = 8  # hex digits of the commit in a cached file's name
RELEASED_WIDTH = 48  # num_feat of every released network
RELEASED_CHANNELS = 3  # RGB in and out


class WeightsDownloadError(PretrainedWeightsError):
    """Released weights that could not be fetched (offline, an HTTP error): like any unusable model, the
    commands report it in one line with exit status 2."""


@dataclass(frozen=True)
class Released:
    """One released checkpoint: the network it holds and where it is."""
    name: str
    num_blocks: int  # 3: ASID, 8: ASID-D8
    upscale: int
    folder: str  # under train_logs/ in the authors' repository
    commit: str
    parameters: int  # of the network it loads into (checked against asid / asid_d8: tests/test_package/test_weights.py)

    @property
    def architecture(self) -> str:
        return 'ASID-D8' if self.num_blocks == 8 else 'ASID'

    @property
    def path(self) -> str:
        """The file's path in the authors' repository: what ``ASID_WEIGHTS_BASE_URL`` is followed by."""
        return f'train_logs/{self.folder}/{RELEASED_FILE}'

    @property
    def file_name(self) -> str:
        """The cached file's name: all six are ``epoch0_ASID.pth`` upstream."""
        return f'{self.name}-{self.commit[:COMMIT_IN_NAME]}.pth'

    def url(self, base: Optional[str] = None) -> str:
        """The download URL: ``base`` (default ``$ASID_WEIGHTS_BASE_URL``, else the authors' repository at
        the pinned commit) followed by :attr:`path`."""
        base = base if base is not None else os.environ.get(BASE_URL_ENV) or f'{UPSTREAM}/{self.commit}'
        return f'{base.rstrip("/")}/{self.path}'

    def build(self):
        """The network these weights load into, from the package's factories (``asid`` / ``asid_d8``)."""
        from .archs.asid_arch import asid, asid_d8

        return (asid_d8 if self.num_blocks == 8 else asid)(upscale=self.upscale)


RELEASED: Dict[str, Released] = {entry.name: entry for entry in (
    Released('asid_x2', 3, 2, 'ASID_X2_DIV2K', COMMIT_FIRST, 297_516),
    Released('asid_x3', 3, 3, 'ASID_X3_DIV2K', COMMIT_LATER, 304_011),
    Released('asid_x4', 3, 4, 'ASID_X4_DIV2K', COMMIT_LATER, 313_104),
    Released('asid_d8_x2', 8, 2, 'ASIDd8_X2_DIV2K', COMMIT_LATER, 732_146),
    Released('asid_d8_x3', 8, 3, 'ASIDd8_X3_DIV2K', COMMIT_FIRST, 738_641),
    Released('asid_d8_x4', 8, 4, 'ASIDd8_X4_DIV2K', COMMIT_FIRST, 747_734),
)}


def released(name: object) -> Optional[Released]:
    """The released checkpoint called ``name`` (any case), or None."""
    return RELEASED.get(name.lower()) if isinstance(name, str) else None


def cache_folder(folder: Union[str, Path, None] = None) -> Path:
    """Where released weights are kept: ``folder``, else ``$ASID_WEIGHTS_DIR``, else torch.hub's checkpoints
    folder (the one BasicSR's ``load_file_from_url`` uses)."""
    if folder is not None:
        return Path(folder).expanduser()
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV]).expanduser()
    import torch.hub

    return Path(torch.hub.get_dir()) / 'checkpoints'


def verify(entry: Released, path: Path, source: str):
    """``(net, config)``: the file at ``path`` loaded strictly into ``entry``'s network through the checked
    loading path; :class:`PretrainedWeightsError` (one line naming ``source``) when it is anything else."""
    from .checkpoint import network_from_state, state_dict_from_file

    wanted = f'{entry.architecture} x{entry.upscale}'
    try:
        net, config = network_from_state(state_dict_from_file(path), source)
    except PretrainedWeightsError as err:  # it names the file read: for a download, a temporary named here instead
        text = str(err).replace(shown(path), source)
        raise PretrainedWeightsError(f'{text} (expected the {wanted} weights of {entry.name})') from None
    found = (config.num_blocks, config.upscale, config.num_feat, config.num_in_ch, config.num_out_ch,
             config.position_bias)
    if found != (entry.num_blocks, entry.upscale, RELEASED_WIDTH, RELEASED_CHANNELS, RELEASED_CHANNELS, True):
        raise PretrainedWeightsError(
            f'{source} holds {config.variant} x{config.upscale} weights ({config.num_feat} channels, '
            f'{config.num_in_ch} -> {config.num_out_ch}), not the {wanted} weights of {entry.name}')
    count = sum(p.numel() for p in net.parameters())
    if count != entry.parameters:
        raise PretrainedWeightsError(f'{source} holds {count} parameters; the {wanted} weights of {entry.name} '
                                     f'have {entry.parameters}')
    return net, config


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``folder`` (where flock exists): one download into it at a time."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _remove_temporaries(folder: Path, final: Path) -> None:
    """What a killed download of ``final`` left (its ``.download`` file and torch.hub's ``.partial`` ones)."""
    prefix = f'.{final.name}{DOWNLOAD_SUFFIX}'
    for name in os.listdir(folder):
        if name.startswith(prefix):
            with contextlib.suppress(OSError):
                (folder / name).unlink()


def _by_hand(url: str, final: Path) -> str:
    return (f'without internet, download {url} elsewhere and place it at {shown(final)} (or set {BASE_URL_ENV} to a '
            f"mirror of the authors' repository, {CACHE_DIR_ENV} to another cache folder)")


def fetch(name: str, folder: Union[str, Path, None] = None, base_url: Optional[str] = None,
          progress: bool = True) -> Path:
    """The path of the released weights called ``name``, downloaded and checked on first use.

    Raises KeyError for an unknown name, :class:`WeightsDownloadError` when the download fails and
    :class:`PretrainedWeightsError` when the file (downloaded or cached) is not the named network's.
    """
    from torch.hub import download_url_to_file

    entry = released(name)
    if entry is None:
        raise KeyError(f'{name!r} is not a released model ({", ".join(RELEASED)})')
    folder = cache_folder(folder)
    final = folder / entry.file_name
    url = entry.url(base_url)
    if not final.exists():
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise WeightsDownloadError(f'cannot create the weights cache {shown(folder)} ({err.strerror or err}); set '
                                       f'{CACHE_DIR_ENV} to a folder you can write') from None
        with _folder_lock(folder):
            if not final.exists():  # (another process may have fetched it while this one waited)
                _download(entry, url, folder, final, download_url_to_file, progress)
                return final
    verify(entry, final, f'{shown(final)} (the cached {entry.name}: delete it to download it again)')
    return final


def _download(entry: Released, url: str, folder: Path, final: Path, download, progress: bool) -> None:
    """``url`` -> ``final`` through a checked temporary (see the module docstring)."""
    _remove_temporaries(folder, final)
    temporary = folder / f'.{final.name}{DOWNLOAD_SUFFIX}'
    print(f'asid_arch: downloading {entry.name} ({entry.architecture} x{entry.upscale}) from {url} to {shown(final)}',
          file=sys.stderr)
    try:
        try:
            download(url, str(temporary), progress=progress)
        except (OSError, ValueError, http.client.HTTPException) as err:
            code = getattr(err, 'code', None)  # an HTTP error's status
            reason = getattr(err, 'reason', None) or getattr(err, 'strerror', None) or err
            reason = f'HTTP {code} {reason}' if isinstance(code, int) else f'{type(err).__name__}: {reason}'
            raise WeightsDownloadError(f'cannot download {entry.name} from {url} ({reason}); '
                                       f'{_by_hand(url, final)}') from None
        try:
            verify(entry, temporary, f'the file {url} gave')
        except PretrainedWeightsError as err:
            raise PretrainedWeightsError(f'{err}; nothing was kept (a broken transfer, or a mirror that serves '
                                         'another file)') from None
        os.replace(temporary, final)
    finally:
        with contextlib.suppress(OSError):
            temporary.unlink()


def resolve_model(value: Union[str, Path], folder: Union[str, Path, None] = None) -> Path:
    """A ``-m``/``--model`` argument as a path: an existing file as it is, else a released name downloaded
    (:func:`fetch`). A value that is neither gets :class:`PretrainedWeightsError` naming the known names."""
    if os.path.lexists(value) or released(os.fspath(value)) is None:
        text = os.fspath(value)
        if not os.path.lexists(value) and os.sep not in text and not Path(text).suffix:
            raise PretrainedWeightsError(f'{shown(text)}: no such file, and not the name of released weights '
                                         f'({", ".join(RELEASED)})')
        return Path(value)
    return fetch(os.fspath(value), folder)
