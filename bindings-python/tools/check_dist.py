"""Checks the built wheel and sdist of the Python package before anything installs them.

    python tools/check_dist.py --wheel dist/remote_access-...whl --sdist dist/remote_access-....tar.gz \
        [--built-in DIR]

The wheel: its file name and `WHEEL` tags are abi3 for CPython 3.10+ and manylinux2014 x86_64;
`auditwheel show` agrees (manylinux_2_17); the extension is stripped and needs no glibc symbol
newer than 2.17; it holds the package, its stubs, `py.typed` and the license; its metadata
carries the README as the long description and no placeholder URL.

The sdist: it holds every source file a build needs (this crate's, the core's, the package's,
the workspace manifest and lock file), and it builds offline: with `--built-in DIR`, the wheel
was built in DIR, the sdist unpacked (as scripts/build-bindings does), and its lock file there
is compared; without, `cargo check --offline` runs in it, unpacked, reusing the workspace's
target directory. Either way the lock file may only lose the packages of workspace members the
sdist leaves out.

Needs pyelftools (a dependency of auditwheel) and auditwheel on PATH.
"""

from __future__ import annotations

import argparse
import email.parser
import os
import pathlib
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile

from elftools.elf.elffile import ELFFile
from elftools.elf.gnuversions import GNUVerNeedSection

PACKAGE = pathlib.Path(__file__).resolve().parents[1]
REPO = PACKAGE.parent
TAGS = {"cp310-abi3-manylinux2014_x86_64", "cp310-abi3-manylinux_2_17_x86_64"}
NEWEST_GLIBC = (2, 17)


def fail(message: str) -> None:
    sys.exit(f"check_dist: {message}")


def check_wheel(wheel: pathlib.Path) -> None:
    name = wheel.name
    match = re.fullmatch(r"remote_access-([^-]+)-cp310-abi3-manylinux2014_x86_64\.manylinux_2_17_x86_64\.whl", name)
    if not match:
        fail(f"{name}: not an abi3 (cp310) manylinux2014 x86_64 wheel name")
    version = match.group(1)
    dist_info = f"remote_access-{version}.dist-info"
    with zipfile.ZipFile(wheel) as zf:
        files = set(zf.namelist())
        wheel_meta = email.parser.Parser().parsestr(zf.read(f"{dist_info}/WHEEL").decode())
        metadata = email.parser.Parser().parsestr(zf.read(f"{dist_info}/METADATA").decode())
        license_text = zf.read(f"{dist_info}/licenses/LICENSE").decode()
        with tempfile.TemporaryDirectory() as tmp:
            so = pathlib.Path(zf.extract("remote_access/_native.abi3.so", tmp))
            stripped, glibc, needed, size = inspect_elf(so)

    tags = set(wheel_meta.get_all("Tag") or [])
    if tags != TAGS or wheel_meta["Root-Is-Purelib"] != "false":
        fail(f"{name}: WHEEL tags {sorted(tags)}, Root-Is-Purelib {wheel_meta['Root-Is-Purelib']}")
    for path in ["__init__.py", "_types.py", "_native.pyi", "py.typed", "_native.abi3.so"]:
        if f"remote_access/{path}" not in files:
            fail(f"{name}: no remote_access/{path}")
    if "Apache License" not in license_text or "Version 2.0" not in license_text:
        fail(f"{name}: the license file is not the Apache-2.0 text")

    if not stripped:
        fail(f"{name}: the extension is not stripped (it has .symtab or .debug sections)")
    if max(glibc) > NEWEST_GLIBC:
        fail(f"{name}: the extension needs GLIBC_{'.'.join(map(str, max(glibc)))}, newer than manylinux2014's 2.17")

    expected = {
        "Name": "remote-access",
        "Version": version,
        "Requires-Python": ">=3.10",
        "License-Expression": "Apache-2.0",
        "License-File": "LICENSE",
    }
    for field, value in expected.items():
        if metadata[field] != value:
            fail(f"{name}: METADATA {field} is {metadata[field]!r}, not {value!r}")
    if not (metadata["Description-Content-Type"] or "").startswith("text/markdown"):
        fail(f"{name}: the long description is not markdown")
    if metadata.get_payload().strip() != (PACKAGE / "README.md").read_text().strip():
        fail(f"{name}: the long description is not bindings-python/README.md")
    classifiers = set(metadata.get_all("Classifier") or [])
    if "Programming Language :: Python :: 3.10" not in classifiers:
        fail(f"{name}: no classifier for Python 3.10, the abi3 floor")
    if "example.invalid" in str(metadata) or "example.com/" in " ".join(metadata.get_all("Project-URL") or []):
        fail(f"{name}: a placeholder URL in the metadata")

    auditwheel = subprocess.run(["auditwheel", "show", str(wheel)], capture_output=True, text=True)
    shown = " ".join(auditwheel.stdout.split())
    if auditwheel.returncode != 0 or 'consistent with the following platform tag: "manylinux_2_17_x86_64"' not in shown:
        fail(f"auditwheel show {name}:\n{auditwheel.stdout}{auditwheel.stderr}")

    newest = "GLIBC_" + ".".join(map(str, max(glibc)))
    print(f"wheel {name}: tags {', '.join(sorted(tags))}; auditwheel: manylinux_2_17_x86_64;")
    print(f"  _native.abi3.so: stripped, {size / 1e6:.1f} MB, newest symbol {newest}, needs {', '.join(needed)}")


def inspect_elf(so: pathlib.Path) -> tuple[bool, list[tuple[int, ...]], list[str], int]:
    """Whether `so` is stripped, the glibc versions it needs, its DT_NEEDED and its size."""
    with open(so, "rb") as f:
        elf = ELFFile(f)
        names = [section.name for section in elf.iter_sections()]
        stripped = ".symtab" not in names and not any(n.startswith(".debug") for n in names)
        glibc = []
        for section in elf.iter_sections():
            if isinstance(section, GNUVerNeedSection):
                for _, auxiliaries in section.iter_versions():
                    for aux in auxiliaries:
                        if aux.name.startswith("GLIBC_"):
                            glibc.append(tuple(int(n) for n in aux.name[len("GLIBC_"):].split(".")))
        dynamic = elf.get_section_by_name(".dynamic")
        needed = [tag.needed for tag in dynamic.iter_tags() if tag.entry.d_tag == "DT_NEEDED"] if dynamic else []
    return stripped, glibc or [(0,)], needed, so.stat().st_size


def check_sdist(sdist: pathlib.Path, built_in: pathlib.Path | None) -> None:
    name = sdist.name
    top = name.removesuffix(".tar.gz")
    with tarfile.open(sdist) as tf:
        files = {member.name.removeprefix(f"{top}/") for member in tf.getmembers() if member.isfile()}
        needed = {"PKG-INFO", "pyproject.toml", "Cargo.toml", "Cargo.lock", "README.md", "LICENSE"}
        needed |= {f"bindings-python/{p.relative_to(PACKAGE)}" for p in (PACKAGE / "src").rglob("*.rs")}
        needed |= {"bindings-python/Cargo.toml"}
        needed |= {f"python/{p.relative_to(PACKAGE / 'python')}" for p in (PACKAGE / "python").rglob("*") if p.is_file() and "__pycache__" not in p.parts}
        core = REPO / "remote-access-core"
        needed |= {f"remote-access-core/{p.relative_to(core)}" for p in (core / "src").rglob("*.rs")}
        needed |= {"remote-access-core/Cargo.toml"}
        # The workspace's [patch] points into patches/: without those files nothing builds.
        needed |= {str(p.relative_to(REPO)) for p in (REPO / "patches").rglob("*") if p.suffix == ".rs" or p.name == "Cargo.toml"}
        missing = sorted(needed - files)
        if missing:
            fail(f"{name}: missing {missing}")
        packed_lock = tf.extractfile(f"{top}/Cargo.lock")
        if packed_lock is None:
            fail(f"{name}: Cargo.lock is not a file")
        lock_before = packages(packed_lock.read().decode())
        if built_in is not None:
            changed = packages((built_in / "Cargo.lock").read_text()) - lock_before
            how = f"the wheel was built from it ({built_in})"
        else:
            with tempfile.TemporaryDirectory() as tmp:
                if hasattr(tarfile, "data_filter"):  # Python 3.11.4 and later
                    tf.extractall(tmp, filter="data")
                else:
                    tf.extractall(tmp)
                root = pathlib.Path(tmp) / top
                env = {**os.environ, "CARGO_TARGET_DIR": os.environ.get("CARGO_TARGET_DIR", str(REPO / "target"))}
                check = subprocess.run(
                    ["cargo", "check", "--offline", "--quiet", "-p", "remote-access-python"],
                    cwd=root, env=env, capture_output=True, text=True,
                )
                if check.returncode != 0:
                    fail(f"{name}: cargo check --offline in the unpacked sdist failed:\n{check.stderr}")
                changed = packages((root / "Cargo.lock").read_text()) - lock_before
            how = "cargo check --offline passes in it"
        if changed:
            fail(f"{name}: resolving the sdist changed locked versions: {sorted(changed)}")
    print(f"sdist {name}: {len(files)} files, every source a build needs; {how}")


def packages(lock: str) -> set[tuple[str, str]]:
    """(name, version) of every package in a Cargo.lock's text."""
    return set(re.findall(r'\[\[package\]\]\nname = "([^"]+)"\nversion = "([^"]+)"', lock))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wheel", type=pathlib.Path, required=True)
    parser.add_argument("--sdist", type=pathlib.Path, required=True)
    parser.add_argument("--built-in", type=pathlib.Path, help="where the wheel was built from the sdist, unpacked")
    args = parser.parse_args()
    check_wheel(args.wheel)
    check_sdist(args.sdist, args.built_in)


if __name__ == "__main__":
    main()
