"""Client API keys: stored hashed, shown once, revoked for good; and `isense keys`."""

import json
import re
from pathlib import Path

import pytest

from isense_slurm.cli import main
from isense_slurm.errors import UsageError
from isense_slurm.meter.keys import key_hash
from isense_slurm.meter.ledger import Ledger

REPO = Path(__file__).resolve().parents[2]


def ledger_bytes(folder: Path) -> bytes:
    """Every byte of the ledger and its WAL/SHM files."""
    return b"".join(p.read_bytes() for p in sorted(folder.iterdir()) if p.name.startswith("ledger.db"))


def test_created_key_is_returned_once_and_stored_only_as_a_hash(tmp_path):
    with Ledger.open(tmp_path / "ledger.db") as ledger:
        info, plaintext = ledger.create_key("alice")
        assert re.fullmatch(r"isk-[A-Za-z0-9_-]{40}", plaintext)
        assert info.prefix == plaintext[:12] and info.active and info.name == "alice"
        assert ledger.active_key_hashes() == {key_hash(plaintext): info}
        # both while the rows may still sit in the WAL and after a checkpoint on close
        stored = ledger_bytes(tmp_path)
        assert key_hash(plaintext).encode() in stored  # the scan does see the key row
        assert plaintext.encode() not in stored
        assert plaintext[12:].encode() not in stored
    stored = ledger_bytes(tmp_path)
    assert key_hash(plaintext).encode() in stored
    assert plaintext[12:].encode() not in stored


def test_keys_are_distinct(tmp_path):
    with Ledger.open(tmp_path / "ledger.db") as ledger:
        plaintexts = {ledger.create_key(f"k{i}")[1] for i in range(50)}
    assert len(plaintexts) == 50


def test_revoke_by_name_or_id_and_only_once(tmp_path):
    with Ledger.open(tmp_path / "ledger.db") as ledger:
        alice, alice_key = ledger.create_key("alice")
        bob, bob_key = ledger.create_key("bob")
        generation = ledger.keys_generation()

        revoked = ledger.revoke_key("alice")
        assert revoked.id == alice.id and revoked.revoked_at is not None
        assert set(ledger.active_key_hashes()) == {key_hash(bob_key)}
        assert ledger.keys_generation() == generation + 1
        with pytest.raises(UsageError, match="already revoked"):
            ledger.revoke_key("alice")
        with pytest.raises(UsageError, match="already revoked"):
            ledger.revoke_key(alice.id)

        ledger.revoke_key(str(bob.id))
        assert ledger.active_key_hashes() == {}
        with pytest.raises(UsageError, match="no API key"):
            ledger.revoke_key("carol")
        with pytest.raises(UsageError, match="no API key"):
            ledger.revoke_key(999)

        # a revoked name may be reused; the new key is a new id
        again, again_key = ledger.create_key("alice")
        assert again.id not in (alice.id, bob.id) and again_key != alice_key
        assert [k.active for k in ledger.list_keys()] == [False, False, True]


def test_names_are_checked(tmp_path):
    with Ledger.open(tmp_path / "ledger.db") as ledger:
        ledger.create_key("alice@example.org")
        with pytest.raises(UsageError, match="exists"):
            ledger.create_key("alice@example.org")
        for bad in ["", "a b", "123", "-x", "x" * 65, "naïve"]:
            with pytest.raises(UsageError, match="key name"):
                ledger.create_key(bad)
        assert len(ledger.list_keys()) == 1


def test_cli_create_list_revoke(tmp_path, capsys):
    db = str(tmp_path / "ledger.db")
    assert main(["keys", "create", "alice", "--ledger", db, "--json"]) == 0
    out, err = capsys.readouterr()
    created = json.loads(out)
    assert created["name"] == "alice" and created["key"].startswith(created["prefix"])
    assert "not shown again" in err

    assert main(["keys", "--ledger", db, "create", "bob"]) == 0
    bob_key = capsys.readouterr().out.strip()
    assert re.fullmatch(r"isk-[A-Za-z0-9_-]{40}", bob_key)

    assert main(["keys", "list", "--ledger", db]) == 0
    table = capsys.readouterr().out
    assert "alice" in table and "bob" in table and "NAME" in table
    assert created["key"][12:] not in table and bob_key[12:] not in table

    assert main(["keys", "revoke", "alice", "--ledger", db]) == 0
    assert "revoked key 1" in capsys.readouterr().out
    assert main(["keys", "revoke", "alice", "--ledger", db]) == 2
    assert capsys.readouterr().err.strip() == "isense: API key 1 (alice) is already revoked"

    assert main(["keys", "list", "--ledger", db, "--json"]) == 0
    listed = capsys.readouterr().out
    assert [(k["name"], k["active"]) for k in json.loads(listed)] == [("alice", False), ("bob", True)]
    assert "hash" not in listed and bob_key[12:] not in listed and key_hash(bob_key) not in listed


def test_cli_reads_the_ledger_path_from_the_config(tmp_path, capsys):
    example = (REPO / "docs/examples/isense.toml").read_text()
    ledger_path = tmp_path / "from-config.db"
    config = tmp_path / "isense.toml"
    config.write_text(example.replace('path = "/var/lib/isense/ledger.db"', f'path = "{ledger_path}"'))
    assert main(["--config", str(config), "keys", "create", "ops"]) == 0
    capsys.readouterr()
    with Ledger.open(ledger_path, create=False) as ledger:
        assert [k.name for k in ledger.list_keys()] == ["ops"]


def test_cli_refuses_a_foreign_ledger(tmp_path, capsys):
    bogus = tmp_path / "bogus.db"
    bogus.write_text("not sqlite at all")
    assert main(["keys", "list", "--ledger", str(bogus)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"isense: {bogus}: ") and err.count("\n") == 1
