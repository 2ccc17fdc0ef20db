"""The parts of extract-exo that need no server: records, names, messages, sign-in settings."""

from __future__ import annotations

import orjson
import pytest

from stages.cli import ZivsyncError
from stages.sources.exchangeonline import (
    Cmdlet,
    Login,
    Names,
    addresses_of,
    group_record,
    is_principal_without_mailbox,
    object_id,
    odata_error,
    person_record,
)

MAILBOX = {"Guid": "2A1FAF15-0000-4000-8000-000000000001",
           "ExternalDirectoryObjectId": "AAD00000-0000-4000-8000-0000000000AA",
           "PrimarySmtpAddress": "Info@Contoso.example", "DisplayName": "Info",
           "UserPrincipalName": "info@contoso.example",
           "Alias": "info", "Name": "Info", "RecipientTypeDetails": "SharedMailbox", "AccountDisabled": True,
           "EmailAddresses": ["SIP:info@contoso.example", "smtp:Info@Contoso.NL", "SMTP:info@contoso.example",
                              "X500:/o=ExchangeLabs/cn=info", "smtp:info@contoso.example"]}


def test_addresses_primary_first_lower_case_smtp_only():
    assert addresses_of(MAILBOX) == ("info@contoso.example", ["info@contoso.example", "info@contoso.nl"])
    assert addresses_of({"EmailAddresses": ["smtp:b@x.example", "SMTP:A@x.example"]}) == (
        "a@x.example", ["a@x.example", "b@x.example"])
    assert addresses_of({}) == (None, [])


def test_records_use_the_entra_object_id_as_anchor_and_sso_key():
    record = person_record(MAILBOX, "exo")
    assert record["anchor"] == record["sso_key"].lower() == "aad00000-0000-4000-8000-0000000000aa"
    assert record["mailbox"] == "shared" and record["enabled"] is False and record["mail"] == "info@contoso.example"
    assert object_id({"Guid": "ABC"}) == "abc"  # no Entra id (an on-premise-only object): the Guid
    group = group_record({"Guid": "G1", "DisplayName": "Sales", "PrimarySmtpAddress": "sales@contoso.example",
                          "RecipientTypeDetails": "MailUniversalSecurityGroup"},
                         [MAILBOX, {"Guid": "NESTED"}], "exo")
    assert group["members"] == ["aad00000-0000-4000-8000-0000000000aa", "nested"] and group["security_enabled"]


def test_trustees_are_found_by_any_name_exchange_uses():
    names = Names()
    names.add(MAILBOX)
    for name in ("info@contoso.example", "INFO@contoso.nl", "info", "Info", "2a1faf15-0000-4000-8000-000000000001"):
        assert names.find(name) is MAILBOX
    assert names.find("someone else") is None
    assert is_principal_without_mailbox("NT AUTHORITY\\SELF") and is_principal_without_mailbox("S-1-5-21-1-2-3-500")
    assert not is_principal_without_mailbox("alice@contoso.example")


def test_exchange_error_messages_are_its_own_words():
    body = {"error": {"code": "NotFound", "message": "generic", "details": [{
        "message": "Ex6F9304|Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException|"
            "The operation couldn't be performed because object 'x' couldn't be found on 'AM0PR01.PROD.OUTLOOK.COM'."}]}}
    assert odata_error(orjson.dumps(body), "") == ("The operation couldn't be performed because object 'x' couldn't "
                                                   "be found on 'AM0PR01.PROD.OUTLOOK.COM'. "
                                                   "(ManagementObjectNotFoundException)")
    inner = {"error": {"code": "X", "message": "outer", "innererror": {"internalException": {"message": "inner"}}}}
    assert odata_error(orjson.dumps(inner), "") == "inner (X)"
    assert odata_error(b"<html>bad gateway</html>", "Bad Gateway") == "<html>bad gateway</html>"


def test_cmdlets_show_as_powershell_would():
    cmdlet = Cmdlet("Get-Mailbox", RecipientTypeDetails=["UserMailbox", "SharedMailbox"], ResultSize="Unlimited")
    assert str(cmdlet) == "Get-Mailbox -RecipientTypeDetails UserMailbox,SharedMailbox -ResultSize Unlimited"
    assert str(Cmdlet("Get-Recipient", Identity="O'Brien, Pat")) == "Get-Recipient -Identity 'O''Brien, Pat'"
    assert Cmdlet("Get-MailboxPermission", Identity="x").body() == {
        "CmdletInput": {"CmdletName": "Get-MailboxPermission", "Parameters": {"Identity": "x"}}}


def test_exactly_one_way_to_sign_in(tmp_path):
    with pytest.raises(ZivsyncError, match="sign in one way"):
        Login("t", "c").method()
    with pytest.raises(ZivsyncError, match="given: secret, device code"):
        Login("t", "c", secret="s", device_code=True).method()
    assert Login("t", "c", secret="s").credential() == "s"
    assert "s3cret" not in repr(Login("t", "c", secret="s3cret", passphrase="s3cret"))
    key = tmp_path / "key.pem"
    key.write_text("-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ZivsyncError, match="needs its certificate"):
        Login("t", "c", key_file=key).credential()
    assert Login("t", "c", key_file=key, thumbprint="AB:CD").credential()["thumbprint"] == "abcd"


def test_a_name_two_objects_share_names_neither():
    names = Names()
    shared = {"Guid": "1", "DisplayName": "Finance", "PrimarySmtpAddress": "finance@contoso.example"}
    group = {"Guid": "2", "Name": "Finance", "PrimarySmtpAddress": "finance-team@contoso.example"}
    names.add(shared)
    names.add(group)
    assert names.find("Finance") is None  # asked of Exchange instead of taking the first
    assert names.find("finance-team@contoso.example") is group and names.find("2") is group
    names.remember("Finance", group)
    assert names.find("finance") is group


def test_flags_and_odd_addresses():
    from stages.sources.exchangeonline import _flag
    assert [_flag(v) for v in (True, False, "True", "false", None, "maybe")] == [True, False, True, False, False, None]
    primary, addresses = addresses_of({"PrimarySmtpAddress": "jan@contoso.example",
                                       "EmailAddresses": ["SMTP:jan@contoso.example", "smtp:jan@contoso"]})
    assert (primary, addresses) == ("jan@contoso.example", ["jan@contoso.example"])  # one odd address, left out


def test_secret_files_in_utf16_as_powershell_writes_them(tmp_path, monkeypatch):
    from stages.cli import read_secret
    path = tmp_path / "secret.txt"
    path.write_bytes(b"\xff\xfe" + "s3cr3t\r\n".encode("utf-16-le"))
    assert read_secret(str(path), "X_NOT_SET", "secret", "--secret-file") == "s3cr3t"


def test_only_self_and_sids_are_principals_without_mailbox():
    assert not is_principal_without_mailbox("nampr.smit@contoso.example")  # a person, whatever the name
    assert is_principal_without_mailbox("S-1-5-21-1-2-3-1013") and is_principal_without_mailbox("NT AUTHORITY\\SYSTEM")
