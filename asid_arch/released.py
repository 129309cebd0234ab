"""The authors' released weights by name: ``asid-sr photo.jpg -o out/ -m asid_x4``.

Six names, one per released checkpoint of github.com/saturnian77/ASID (ASID and ASID-D8 at x2, x3, x4),
each with the network it must load into (architecture, scale, parameter count), its size range and its URL
pinned to a commit of that repository. A name is downloaded once into a cache folder (:func:`cache_folder`):

* with the package's bounded downloader (:mod:`asid_arch.download`: connect and read stalls time out, a
  trickle below a minimum rate is refused, a bounded number of retries, a ``Content-Length`` or a body outside
  the file's size range refused with nothing written past it), into a temporary file beside the final one;
* the final name is given only to a complete file that (1) has the pinned sha256 where one is known,
  (2) loads strictly into the named network through the package's checked loading path
  (:func:`asid_arch.from_weights.state_dict_from_file`, then :func:`asid_arch.from_weights.network_from_state`)
  and (3) beats bicubic up-sampling on a small real picture (:mod:`asid_arch.released_quality`: random or
  all-zero weights of the right shapes fall far below it). Otherwise nothing is kept and
  :class:`WeightsDownloadError` / :class:`PretrainedWeightsError` says why in one line;
* the sha256 of the file is recorded beside it (``<file>.sha256``, ``sha256sum`` format); a cached file is
  checked against that record each time it is used (and refused, not deleted: the user may have placed it
  there); a file placed by hand, without a record, is checked as a download is, then recorded;
* concurrent downloads into the same cache folder wait for each other (an ``flock`` on the folder), saying so
  and for at most ``ASID_DOWNLOAD_LOCK_WAIT`` seconds; the temporaries killed downloads left are removed by the
  next download, with the lock held (only the package's own, ``.<file>.XXXXXXXX.asid.tmp``:
  :func:`asid_arch.utils.asid_files.remove_stale_temporaries`; a file of another tool is never touched);
* a failed download names the URL, the reason and the path where the file can be placed by hand; a cache
  that cannot be written is named as such, before any download.

Environment: ``ASID_WEIGHTS_BASE_URL`` replaces everything before ``train_logs/...`` in the URLs (a mirror
of the authors' repository tree: air-gapped sites, tests); ``ASID_WEIGHTS_DIR`` replaces the cache folder
(default: torch.hub's ``checkpoints`` folder, ``$TORCH_HOME/hub/checkpoints``, ``~/.cache/torch/hub/checkpoints``);
``ASID_DOWNLOAD_TIMEOUT`` and ``ASID_DOWNLOAD_LOCK_WAIT`` (seconds) change the download's bounds.
"""
from __future__ import annotations

import errno
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

from .console import shown
from .download import DownloadError, DownloadLimits, download, folder_lock, size_text
from .utils.asid_errors import PretrainedWeightsError
from .utils.asid_files import file_sha256

BASE_URL_ENV = 'ASID_WEIGHTS_BASE_URL'
CACHE_DIR_ENV = 'ASID_WEIGHTS_DIR'
UPSTREAM = 'https://raw.githubusercontent.com/saturnian77/ASID'  # serves the raw bytes of a file at a commit
COMMIT_FIRST = 'eb5af3b4ec923b5fb3e97917fa9cde219ad09a2d'  # ASID x2, ASID-D8 x3 and x4
COMMIT_LATER = 'e488abcf502bc514dac404a6c2f547956b282ea9'  # ASID x3 and x4, ASID-D8 x2
RELEASED_FILE = 'checkpoints/epoch0_ASID.pth'  # what every released folder holds
COMMIT_IN_NAME = 8  # hex digits of the commit in a cached file's name
RELEASED_WIDTH = 48  # num_feat of every released network
RELEASED_CHANNELS = 3  # RGB in and out
# Size range of a released file: its float32 weights (the released key lists hold parameters only), up to twice
# that (a state dict saved by torch.save adds ~0.3 KB per tensor: ~9% for ASID, the released x2 is ~1.3 MB)
FLOAT32_BYTES = 4
SIZE_CEILING_FACTOR = 2
HASH_SUFFIX = '.sha256'  # the record beside a cached file: '<sha256 hex>  <file name>' (sha256sum's format)
HASH_RECORD_MAX_BYTES = 1024


class WeightsDownloadError(PretrainedWeightsError):
    """Released weights that could not be fetched (offline, an HTTP error, a stalled or oversized transfer, a
    cache that cannot be written): like any unusable model, the commands report it in one line, exit status 2."""


@dataclass(frozen=True)
class Released:
    """One released checkpoint: the network it holds and where it is."""
    name: str
    num_blocks: int  # 3: ASID, 8: ASID-D8
    upscale: int
    folder: str  # under train_logs/ in the authors' repository
    commit: str
    # of the network it loads into (checked against asid / asid_d8: tests/test_package/test_released.py)
    parameters: int
    sha256: Optional[str] = None  # of the released file, where known (not yet: it was never fetched here)

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

    @property
    def size_range(self) -> Tuple[int, int]:
        """The smallest and largest size (bytes) a file holding these weights can have."""
        weights = self.parameters * FLOAT32_BYTES
        return weights, weights * SIZE_CEILING_FACTOR

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
    from .from_weights import network_from_state, state_dict_from_file

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


def check_content(entry: Released, path: Path, source: str) -> str:
    """The sha256 of the file at ``path`` once it passed every check of released weights: its size, the pinned
    sha256 (where known), :func:`verify`, and beating bicubic (:mod:`asid_arch.released_quality`).
    :class:`PretrainedWeightsError` naming ``source`` otherwise."""
    from .released_quality import measure

    low, high = entry.size_range
    size = path.stat().st_size
    if not low <= size <= high:
        raise PretrainedWeightsError(f'{source} holds {size_text(size)}; the {entry.name} file is '
                                     f'{size_text(low)} to {size_text(high)}')
    digest = file_sha256(path)
    if entry.sha256 and digest != entry.sha256:
        raise PretrainedWeightsError(f'{source} has the sha256 {digest}, not the released {entry.name} file\'s '
                                     f'{entry.sha256}')
    net, _ = verify(entry, path, source)
    quality = measure(net, entry.upscale)
    if not quality.passed:
        raise PretrainedWeightsError(f'{source} is not usable as {entry.name}: {quality}; the released weights beat '
                                     'bicubic (by more than 1 dB): these are random, zero or damaged weights')
    print(f'asid_arch: {entry.name} checked: {quality}', file=sys.stderr)
    return digest


def hash_record(final: Path) -> Path:
    """Where the sha256 of the cached file ``final`` is recorded."""
    return final.with_name(final.name + HASH_SUFFIX)


def _recorded_hash(final: Path) -> Optional[str]:
    """The sha256 recorded for ``final``; None when there is no record, or it is not a readable one."""
    from .utils.asid_files import path_kind

    record = hash_record(final)
    if path_kind(record) != 'regular file' or record.stat().st_size > HASH_RECORD_MAX_BYTES:
        return None
    try:
        match = re.fullmatch(r'([0-9a-f]{64}) [ *](.+)\n?', record.read_text(encoding='ascii'))
    except (OSError, UnicodeError):
        return None
    return match.group(1) if match and match.group(2) == final.name else None


def _record_hash(final: Path, digest: str) -> None:
    """Write ``final``'s hash record; a cache that cannot be written is told once, and the check is redone
    at the next use."""
    from .utils.asid_files import atomic_write, check_replaceable

    try:
        check_replaceable(hash_record(final), 'the sha256 record')  # (only a regular file is ever replaced)
        atomic_write(hash_record(final), lambda f: f.write(f'{digest}  {final.name}\n'.encode('ascii')))
    except OSError as err:
        print(f'asid_arch: note: cannot record the sha256 of {shown(final)} in {shown(hash_record(final))} '
              f'({err.strerror or err}): it is checked again at the next use', file=sys.stderr)


def check_cached(entry: Released, final: Path) -> None:
    """The cached file ``final`` of ``entry``, checked: the same bytes as recorded when it was first checked,
    loading strictly into the named network; a file without a record is checked in full, then recorded."""
    from .utils.asid_files import NotARegularFile, check_readable_file

    source = f'{shown(final)} (the cached {entry.name}: delete it to download it again)'
    try:
        check_readable_file(final, f'the cached {entry.name}')
    except NotARegularFile as err:
        raise PretrainedWeightsError(f'{err}: delete it to download it again') from None
    recorded = _recorded_hash(final)
    if recorded is None:
        _record_hash(final, check_content(entry, final, source))
        return
    low, high = entry.size_range
    size = final.stat().st_size
    digest = file_sha256(final) if low <= size <= high else None
    if digest != recorded:
        raise PretrainedWeightsError(f'{source} is not the file checked when it was downloaded (its sha256 differs '
                                     f'from the one recorded in {shown(hash_record(final))}): replaced or damaged '
                                     'since; delete both files to download it again')
    verify(entry, final, source)


def _prepare_folder(folder: Path) -> None:
    """The cache folder made where missing; :class:`WeightsDownloadError` naming what stands in its way."""
    from .utils.asid_files import path_kind

    for place in (folder, *folder.parents):
        kind = path_kind(place)
        if kind == 'folder':
            break
        if kind != 'missing' and not kind.endswith(f'({os.strerror(errno.ENOTDIR)})'):  # (a file above it)
            what = f'is a {kind}' if place == folder else f'cannot be made: {shown(place)} is a {kind}'
            raise WeightsDownloadError(f'the weights cache {shown(folder)} {what}, not a folder; set {CACHE_DIR_ENV} '
                                       'to a folder')
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise WeightsDownloadError(f'cannot create the weights cache {shown(folder)} ({err.strerror or err}); set '
                                   f'{CACHE_DIR_ENV} to a folder you can write') from None


def fetch(name: str, folder: Union[str, Path, None] = None, base_url: Optional[str] = None,
          progress: bool = True, limits: Optional[DownloadLimits] = None) -> Path:
    """The path of the released weights called ``name``, downloaded and checked on first use.

    ``limits``: the download's bounds (:class:`asid_arch.download.DownloadLimits`; default from the
    environment). Raises KeyError for an unknown name, :class:`WeightsDownloadError` when the download fails
    and :class:`PretrainedWeightsError` when the file (downloaded or cached) is not the named network's.
    """
    entry = released(name)
    if entry is None:
        raise KeyError(f'{name!r} is not a released model ({", ".join(RELEASED)})')
    folder = cache_folder(folder)
    final = folder / entry.file_name
    if not os.path.lexists(final):
        _prepare_folder(folder)
        try:
            limits = limits or DownloadLimits.from_env()
            with folder_lock(folder, 'downloading released weights', limits.lock_wait_s):
                if not os.path.lexists(final):  # (another process may have fetched it while this one waited)
                    _download(entry, entry.url(base_url), folder, final, limits, progress)
                    return final
        except DownloadError as err:
            raise WeightsDownloadError(str(err)) from None
        except OSError as err:  # the lock: a folder that cannot be opened
            raise WeightsDownloadError(f'cannot use the weights cache {shown(folder)} ({err.strerror or err}); set '
                                       f'{CACHE_DIR_ENV} to a folder you can write') from None
    check_cached(entry, final)
    return final


def _download(entry: Released, url: str, folder: Path, final: Path, limits: DownloadLimits,
              progress: bool) -> None:
    """``url`` -> ``final`` through a checked temporary (see the module docstring)."""
    from .utils.asid_files import atomic_write, remove_stale_temporaries

    remove_stale_temporaries(folder)  # (the folder's lock is held: no download of this package is writing there)
    low, high = entry.size_range
    print(f'asid_arch: downloading {entry.name} ({entry.architecture} x{entry.upscale}, {size_text(low)} to '
          f'{size_text(high)}) from {url} to {shown(final)}', file=sys.stderr)
    digest = []

    def write(f) -> None:
        download(url, f, entry.size_range, limits, progress, entry.name)

    def check(temporary: Path) -> None:
        try:
            digest.append(check_content(entry, temporary, f'the file {url} gave'))
        except PretrainedWeightsError as err:
            raise PretrainedWeightsError(f'{err}; nothing was kept (a broken transfer, or a mirror that serves '
                                         'another file)') from None

    try:
        atomic_write(final, write, overwrite=False, check=check)
    except DownloadError as err:
        raise WeightsDownloadError(f'cannot download {entry.name} from {url} ({err}); nothing was kept; download '
                                   f'it by other means and place it at {shown(final)} (or set {BASE_URL_ENV} to a '
                                   f"mirror of the authors' repository)") from None
    except FileExistsError:  # placed there by hand meanwhile (without the lock): checked as a cached file
        check_cached(entry, final)
        return
    except OSError as err:  # the cache: read-only, full, ...
        raise WeightsDownloadError(f'cannot write {entry.name} into the weights cache {shown(folder)} '
                                   f'({err.strerror or err}); set {CACHE_DIR_ENV} to a folder you can write, or '
                                   f'place the file ({url}) at {shown(final)} by other means') from None
    _record_hash(final, digest[0])


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
