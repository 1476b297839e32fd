"""Hostile packages: wheels, sdists and conda packages built to write outside the env.
Each is refused before anything of it is written (or, for what is allowed, installed
harmlessly and reported); nothing appears outside the env, and nothing bad is cached."""

from __future__ import annotations

import base64
import csv
import gzip
import hashlib
import io
import json
import os
import stat
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from checks import cache_problems, nbenv, store_problems
from ledger import FaultLog
from support import IsolatedEnv
from support.index_server import Index, IndexServer
from support.wheels import build_sdist, metadata_text, wheel_filename

MARKER = b"written by a hostile package\n"


def hostile_wheel(
    out: Path,
    name: str,
    members: list[tuple[str, bytes, int]],
    *,
    record_override: dict[str, str] | None = None,
) -> Path:
    """A wheel of `name` 1.0 with extra `(path, data, unix mode)` members, listed in RECORD
    with their true hashes unless `record_override` gives another digest for a path."""
    dist_info = f"{name}-1.0.dist-info"
    entries = [
        (f"{name}/__init__.py", b'__version__ = "1.0"\n', stat.S_IFREG | 0o644),
        *members,
        (f"{dist_info}/METADATA", metadata_text(name, "1.0").encode(), stat.S_IFREG | 0o644),
        (f"{dist_info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: hostile\nRoot-Is-Purelib: true\n"
         b"Tag: py3-none-any\n", stat.S_IFREG | 0o644),
    ]  # fmt: skip
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    for path, data, _mode in entries:
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        digest = (record_override or {}).get(path, digest)
        writer.writerow([path, f"sha256={digest}", len(data)])
    writer.writerow([f"{dist_info}/RECORD", "", ""])
    wheel = out / wheel_filename(name, "1.0")
    out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data, mode in entries:
            info = zipfile.ZipInfo(path, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = mode << 16
            archive.writestr(info, data)
        archive.writestr(f"{dist_info}/RECORD", record.getvalue())
    return wheel


REG = stat.S_IFREG | 0o644
LINK = stat.S_IFLNK | 0o777
WHEELS: list[tuple[str, list[tuple[str, bytes, int]], dict[str, str] | None, str]] = [
    ("wheel member with ../", [("../../../../escaped.txt", MARKER, REG)], None, "escaped.txt"),
    ("wheel member with an absolute path", [("/tmp/nbenv-hostile-abs.txt", MARKER, REG)], None,
     "nbenv-hostile-abs.txt"),
    ("wheel member climbing out of its package", [("hostile/../../../escaped.txt", MARKER, REG)],
     None, "escaped.txt"),
    ("wheel .data member escaping its scheme", [("hostile-1.0.data/data/../../../escaped.txt",
     MARKER, REG)], None, "escaped.txt"),
    ("wheel member that does not match RECORD", [("hostile/mod.py", MARKER, REG)],
     {"hostile/mod.py": "A" * 43}, "RECORD"),
]  # fmt: skip


def _serve(make_index: Callable[..., IndexServer], *files: Path) -> IndexServer:
    index = Index()
    for path in files:
        index.add(path)
    return make_index(index)


def _outside(root: Path, name: str) -> list[str]:
    """Files named `name` anywhere under the test's root or /tmp, outside any env."""
    found = [p for p in root.rglob(name) if "/envs/" not in str(p)]
    found += [p for p in Path("/tmp").glob(name)]
    return [str(p) for p in found]


@pytest.mark.parametrize(("fault", "members", "record", "says"), WHEELS, ids=[w[0] for w in WHEELS])
def test_hostile_wheels_are_refused(
    fault: str,
    members: list[tuple[str, bytes, int]],
    record: dict[str, str] | None,
    says: str,
    make_index: Callable[..., IndexServer],
    faults: FaultLog,
    isolated_env: IsolatedEnv,
    tmp_path: Path,
) -> None:
    faults.inject("hostile package", fault)
    server = _serve(make_index, hostile_wheel(tmp_path / "w", "hostile", members,
                                              record_override=record))  # fmt: skip
    out = nbenv("create", "--no-kernel", "--no-compile", "--index-url", server.url, "hostile")
    assert out.returncode == 1, out.stderr
    assert "hostile-1.0-py3-none-any.whl" in out.stderr and says in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    assert not list((isolated_env.nbenv_home / "envs").glob("[!.]*"))
    name = Path(members[0][0]).name
    problems = [f"{p} was written" for p in _outside(isolated_env.root, name)]
    problems += store_problems(isolated_env.nbenv_home)
    problems += cache_problems(isolated_env.nbenv_home / "cache")
    assert faults.lost(problems) == []


def _site(env: Path) -> Path:
    return next(env.glob("lib/python*/site-packages"))


def test_symlink_members_never_become_symlinks(
    make_index: Callable[..., IndexServer],
    faults: FaultLog,
    isolated_env: IsolatedEnv,
    tmp_path: Path,
) -> None:
    """A zip member marked as a symlink (to /etc/passwd, or up and out of the env) is a
    plain file once installed: nothing in the env points outside it."""
    faults.inject("hostile package", "wheel symlink member to an absolute path")
    faults.inject("hostile package", "wheel symlink member climbing out of the env")
    wheel = hostile_wheel(tmp_path / "w", "hostile", [
        ("hostile/passwd", b"/etc/passwd", LINK),
        ("hostile/up", b"../../../../../../outside", LINK),
    ])  # fmt: skip
    server = _serve(make_index, wheel)
    out = nbenv("create", "--json", "--no-kernel", "--no-compile", "--index-url", server.url,
                "hostile")  # fmt: skip
    if out.returncode == 0:
        env = Path(json.loads(out.stdout)["path"])
        links = [p for p in _site(env).rglob("*") if p.is_symlink()]
        assert links == [], links
        assert (_site(env) / "hostile" / "passwd").read_bytes() == b"/etc/passwd"
    else:
        assert "hostile-1.0-py3-none-any.whl" in out.stderr and "Traceback" not in out.stderr
    problems = store_problems(isolated_env.nbenv_home) + cache_problems(
        isolated_env.nbenv_home / "cache"
    )
    assert faults.lost(problems) == []


def test_a_pth_file_is_installed_and_reported(
    make_index: Callable[..., IndexServer],
    faults: FaultLog,
    isolated_env: IsolatedEnv,
    tmp_path: Path,
) -> None:
    """.pth files run code at every interpreter start; wheels may ship them (editable
    installs, coverage...), so they are allowed, and `nbenv show` names them."""
    faults.inject("hostile package", "wheel with a .pth file")
    wheel = hostile_wheel(tmp_path / "w", "hostile", [("zz-hostile.pth", b"import os\n", REG)])
    server = _serve(make_index, wheel)
    out = nbenv("create", "--json", "--no-kernel", "--no-compile", "--index-url", server.url,
                "hostile")  # fmt: skip
    assert out.returncode == 0, out.stderr
    env_id = json.loads(out.stdout)["env_id"]
    shown = nbenv("show", env_id)
    assert shown.returncode == 0, shown.stderr
    assert "zz-hostile.pth" in shown.stdout and "startup" in shown.stdout, shown.stdout
    info = json.loads(nbenv("show", env_id, "--json").stdout)
    assert info["startup_files"] == ["zz-hostile.pth"]


def _retar(sdist: Path, extra: list[tarfile.TarInfo]) -> None:
    with tarfile.open(sdist) as archive:
        members = [(m, archive.extractfile(m).read()) for m in archive.getmembers()]  # type: ignore[union-attr]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for member, data in members:
            archive.addfile(member, io.BytesIO(data))
        for info in extra:
            archive.addfile(info, io.BytesIO(MARKER) if info.isfile() else None)
    sdist.write_bytes(gzip.compress(buffer.getvalue(), mtime=0))


def _tar_member(name: str, *, link: str | None = None) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    if link is not None:
        info.type, info.linkname = tarfile.SYMTYPE, link
    else:
        info.size = len(MARKER)
    return info


SDISTS = [
    ("sdist member with ../", _tar_member("evilsd-1.0/../../escaped.txt"), "escaped.txt"),
    ("sdist symlink to an absolute path", _tar_member("evilsd-1.0/passwd", link="/etc/passwd"),
     "passwd"),
    ("sdist symlink climbing out", _tar_member("evilsd-1.0/up", link="../../../../outside"), "up"),
]  # fmt: skip


@pytest.mark.parametrize(("fault", "member", "name"), SDISTS, ids=[s[0] for s in SDISTS])
def test_hostile_sdists_are_refused(
    fault: str,
    member: tarfile.TarInfo,
    name: str,
    make_index: Callable[..., IndexServer],
    faults: FaultLog,
    isolated_env: IsolatedEnv,
    tmp_path: Path,
) -> None:
    faults.inject("hostile package", fault)
    sdist = build_sdist(tmp_path / "s", "evilsd", "1.0")
    _retar(sdist, [member])
    server = _serve(make_index, sdist)
    out = nbenv("create", "--no-kernel", "--no-compile", "--index-url", server.url, "evilsd")
    assert out.returncode == 1, out.stderr
    assert "evilsd-1.0.tar.gz" in out.stderr and "Traceback" not in out.stderr, out.stderr
    problems = [f"{p} was written" for p in _outside(isolated_env.root, name) if "escaped" in name]
    problems += store_problems(isolated_env.nbenv_home)
    assert faults.lost(problems) == []


# -- conda ----------------------------------------------------------------------------------

# Solve and install in a child process: a crash of the installer must fail the test, not
# take the test run down with it.
_CONDA_CHILD = """
import sys
from pathlib import Path
from nbenv.conda import install_prefix
from nbenv.errors import NbenvError
from nbenv.resolve.conda import parse_conda_args, solve
channel, prefix, cache = sys.argv[1:]
try:
    install_prefix(solve(parse_conda_args(["-c", channel, "evil"])), Path(prefix),
                   cache_dir=Path(cache))
except NbenvError as exc:
    print(exc, file=sys.stderr)
    sys.exit(1)
"""

CONDA = [
    ("conda package path with ../", {"files": {"../escaped-conda.txt": "x\n"}},
     "escaped-conda.txt"),
    # py-rattler 0.28 itself would panic on this one and abort the whole process (SIGABRT)
    ("conda package absolute path", {"files": {"/tmp/nbenv-hostile-conda.txt": "x\n"}},
     "nbenv-hostile-conda.txt"),
    ("conda package path climbing out", {"files": {"share/../../escaped-conda.txt": "x\n"}},
     "escaped-conda.txt"),
    ("conda package symlink out of the prefix", {"symlinks": {"share/passwd": "/etc/passwd"},
     "files": {"share/ok.txt": "ok\n"}}, None),
    ("conda package symlink climbing out", {"symlinks": {"share/up": "../../../../outside"},
     "files": {"share/ok.txt": "ok\n"}}, None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("fault", "contents", "name"),
    CONDA,
    ids=["dotdot", "absolute", "climbing", "symlink-absolute", "symlink-climbing"],
)
def test_conda_packages_escaping_the_prefix(
    fault: str,
    contents: dict[str, dict[str, str]],
    name: str | None,
    faults: FaultLog,
    tmp_path: Path,
) -> None:
    """Installed with nbenv's rattler install into a prefix: a path outside the prefix is
    refused with an error naming the package; symlinks may point anywhere, as conda's do
    (they are the package's files), but nothing is written through them."""
    from support.conda_channel import build_conda_package, index_channel, native_subdir

    faults.inject("hostile package", fault)
    channel = tmp_path / "channel"
    build_conda_package(channel, "evil", "1.0", subdir=native_subdir(), **contents)  # type: ignore[arg-type]
    index_channel(channel)
    prefix = tmp_path / "deep" / "er" / "env"
    out = subprocess.run(
        [sys.executable, "-c", _CONDA_CHILD, channel.as_uri(), str(prefix), str(tmp_path / "c")],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=120,
    )
    assert out.returncode in (0, 1), f"the install crashed ({out.returncode}): {out.stderr[-500:]}"
    if name is not None:
        assert out.returncode == 1 and "evil-1.0-h0_0.tar.bz2" in out.stderr, out.stderr
        assert name in out.stderr and "outside the environment" in out.stderr, out.stderr
        assert not prefix.exists() or not list(prefix.rglob(name))  # nothing was linked
    problems = []
    if name is not None:
        problems += [f"{p} was written" for p in _outside(tmp_path, name)
                     if not str(p).startswith(str(prefix))]  # fmt: skip
    for link in prefix.rglob("*") if prefix.exists() else []:
        if link.is_symlink() and link.resolve().exists():
            assert link.resolve().read_bytes() != MARKER  # nothing was written through it
    assert faults.lost(problems) == []


def test_a_hostile_conda_package_leaves_the_store_and_cache_usable(
    faults: FaultLog, isolated_env: IsolatedEnv, tmp_path: Path
) -> None:
    """Through `nbenv create --conda`: refused with the package and the path named, no env
    in the store, nothing written outside; the same cache then builds a good env, and the
    refusal is not remembered as safe."""
    from support.conda_channel import build_conda_package, index_channel, native_subdir

    faults.inject("hostile package", "conda package absolute path, through nbenv create")
    channel = tmp_path / "channel"
    build_conda_package(
        channel,
        "evil",
        "1.0",
        subdir=native_subdir(),
        files={"/tmp/nbenv-hostile-cli.txt": "x\n", "share/evil.txt": "e\n"},
    )
    build_conda_package(channel, "good", "1.0", subdir=native_subdir(),
                        files={"share/good.txt": "g\n"})  # fmt: skip
    index_channel(channel)
    argv = ["create", "--json", "--no-kernel", "--channel", channel.as_uri()]
    for attempt in ("first", "again"):  # a refusal is never remembered as safe
        out = nbenv(*argv, "--conda", "evil", "--conda", "good")
        assert out.returncode == 1, f"{attempt}: {out.returncode} {out.stderr[-500:]}"
        assert "evil-1.0-h0_0.tar.bz2" in out.stderr, out.stderr
        assert "/tmp/nbenv-hostile-cli.txt" in out.stderr and "Traceback" not in out.stderr
    problems = [f"{p} was written" for p in _outside(isolated_env.root, "nbenv-hostile-cli.txt")]
    problems += store_problems(isolated_env.nbenv_home)
    if list((isolated_env.nbenv_home / "envs").glob("[!.]*")):
        problems.append("an env is in the store")
    good = nbenv(*argv, "--conda", "good")
    assert good.returncode == 0, good.stderr
    env = Path(json.loads(good.stdout)["path"])
    assert (env / "share" / "good.txt").read_text() == "g\n"
    assert not (env / "share" / "evil.txt").exists()
    assert faults.lost(problems) == []
