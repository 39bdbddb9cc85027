"""etc-slurm/job_submit.lua run by the Lua library slurmctld uses (liblua, through
ctypes): it replaces the wake file whole (a new file renamed over it), leaves no
temporary file, and never fails a job, even when it cannot write.

Skipped where no liblua is installed (Debian's slurm-wlm-basic-plugins brings one).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "etc-slurm" / "job_submit.lua"
WAKE_LINE = 'local ISENSE_WAKE_FILE = "/var/spool/isense/submit.wake"'


def _liblua():
    for name in ("lua5.1", "lua5.4", "lua5.3", "lua"):
        found = ctypes.util.find_library(name)
        if found:
            return ctypes.CDLL(found)
    pytest.skip("no liblua on this host")


def run_lua(code: str) -> str | None:
    """Run code in a fresh Lua state; its error message, or None."""
    lua = _liblua()
    lua.luaL_newstate.restype = ctypes.c_void_p
    lua.luaL_openlibs.argtypes = [ctypes.c_void_p]
    lua.luaL_loadstring.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lua.lua_tolstring.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
    lua.lua_tolstring.restype = ctypes.c_char_p
    lua.lua_close.argtypes = [ctypes.c_void_p]
    state = lua.luaL_newstate()
    lua.luaL_openlibs(state)
    try:
        if lua.luaL_loadstring(state, code.encode()) == 0:
            if hasattr(lua, "lua_pcall"):  # 5.1; a macro over lua_pcallk from 5.2 on
                lua.lua_pcall.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int]
                rc = lua.lua_pcall(state, 0, 0, 0)
            else:
                lua.lua_pcallk.argtypes = [
                    ctypes.c_void_p,
                    ctypes.c_int,
                    ctypes.c_int,
                    ctypes.c_int,
                    ctypes.c_void_p,
                    ctypes.c_void_p,
                ]
                rc = lua.lua_pcallk(state, 0, 0, 0, None, None)
            if rc == 0:
                return None
        return lua.lua_tolstring(state, -1, None).decode()
    finally:
        lua.lua_close(state)


def script_for(wake: Path) -> str:
    text = SCRIPT.read_text()
    assert WAKE_LINE in text  # the line `isense slurm-conf` tells admins to sed
    return "slurm = { SUCCESS = 0 }\n" + text.replace(WAKE_LINE, f'local ISENSE_WAKE_FILE = "{wake}"')


def test_each_call_replaces_the_wake_file_whole(tmp_path):
    wake = tmp_path / "submit.wake"
    error = run_lua(
        script_for(wake)
        + """
assert(slurm_job_submit({}, {}, 1234) == slurm.SUCCESS)
assert(slurm_job_modify({}, {}, {}, 99) == slurm.SUCCESS)
"""
    )
    assert error is None
    assert [p.name for p in tmp_path.iterdir()] == ["submit.wake"]  # no temporary file left
    stamp, count, uid = wake.read_text().split()
    assert int(stamp) > 0 and count == "2" and uid == "uid=99"
    # Replaced, not rewritten in place: a reader of the old file never sees it change
    # (nor empty, between a truncate and a write).
    before = tmp_path / "before"
    before.hardlink_to(wake)
    assert run_lua(script_for(wake) + "slurm_job_submit({}, {}, 7)\n") is None
    assert before.read_text().endswith(" 2 uid=99\n") and wake.read_text().endswith(" 1 uid=7\n")


def test_an_unwritable_folder_never_fails_a_job(tmp_path):
    error = run_lua(
        script_for(tmp_path / "missing" / "submit.wake")
        + """
assert(slurm_job_submit({}, {}, 1234) == slurm.SUCCESS)
assert(slurm_job_modify({}, {}, {}, 1234) == slurm.SUCCESS)
"""
    )
    assert error is None
    assert not (tmp_path / "missing").exists()
