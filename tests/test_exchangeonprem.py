"""How extract-exchange reads the objects pypsrp deserialises, quirks included (reference
exchange.md §2.4), on CLIXML as Exchange writes it; and its settings."""

from __future__ import annotations

import pytest
from pypsrp.serializer import Serializer

from stages.cli import ZivsyncError
from stages.sources.exchangeonline import Names, person_record
from stages.sources.exchangeonprem import Endpoint, RemotePowerShell, as_dict

MAILBOX = """<Obj RefId="0"><TN RefId="0"><T>Deserialized.Microsoft.Exchange.Data.Directory.Management.Mailbox</T>
<T>Deserialized.Microsoft.Exchange.Data.Directory.Management.MailEnabledOrgPerson</T><T>Deserialized.System.Object</T>
</TN><ToString>Shared One</ToString><Props>
<S N="DisplayName">Shared One</S><S N="PrimarySmtpAddress">shared1@contoso.example</S>
<S N="SamAccountName">shared1</S><S N="DistinguishedName">CN=Shared One,OU=Shared,DC=contoso,DC=local</S>
<G N="Guid">2a1faf15-1111-4222-8333-444455556666</G><B N="AccountDisabled">true</B>
<Obj N="RecipientTypeDetails" RefId="1"><TN RefId="1">
<T>Deserialized.Microsoft.Exchange.Data.Directory.Recipient.RecipientTypeDetails</T><T>Deserialized.System.Enum</T>
<T>Deserialized.System.ValueType</T><T>Deserialized.System.Object</T></TN><ToString>SharedMailbox</ToString>
<U64>4</U64></Obj>
<Obj N="EmailAddresses" RefId="2"><TN RefId="2"><T>Deserialized.Microsoft.Exchange.Data.ProxyAddressCollection</T>
<T>Deserialized.Microsoft.Exchange.Data.MultiValuedProperty`1[[Microsoft.Exchange.Data.ProxyAddress]]</T>
<T>Deserialized.System.Object</T></TN>
<LST><S>SMTP:shared1@contoso.example</S><S>smtp:info@contoso.example</S><S>X500:/o=Contoso/cn=shared1</S></LST></Obj>
</Props></Obj>""".replace("\n", "")


def test_a_mailbox_as_exchange_serialises_it():
    record = as_dict(Serializer().deserialize(MAILBOX))
    assert record["EmailAddresses"] == ["SMTP:shared1@contoso.example", "smtp:info@contoso.example",
                                        "X500:/o=Contoso/cn=shared1"]  # from the raw <LST> pypsrp hands over
    assert record["RecipientTypeDetails"] == "SharedMailbox" and record["Guid"] == "2a1faf15-1111-4222-8333-444455556666"
    assert record["AccountDisabled"] is True
    person = person_record(record, "exchange")
    assert person["anchor"] == person["sso_key"] == "2a1faf15-1111-4222-8333-444455556666"  # AD's objectGUID
    assert person["addresses"] == ["shared1@contoso.example", "info@contoso.example"] and person["mailbox"] == "shared"
    assert person["dn"].startswith("CN=Shared One") and person["sam_account_name"] == "shared1"


def test_domain_user_trustees_are_found_by_their_sam():
    names = Names()
    names.add(as_dict(Serializer().deserialize(MAILBOX)))
    assert names.find("CONTOSO\\shared1")["SamAccountName"] == "shared1"
    assert names.find("OTHER\\nobody") is None


def test_basic_over_http_needs_its_option():
    shell = RemotePowerShell(Endpoint("http://ex01.contoso.local/PowerShell/", auth="basic", username="u", password="p"))
    with pytest.raises(ZivsyncError, match="--allow-unencrypted"):
        shell.open()
    assert Endpoint("ex01.contoso.local").parts() == (True, "ex01.contoso.local", 443, "PowerShell")
    assert Endpoint("http://ex01/PowerShell/").parts() == (False, "ex01", 80, "PowerShell")
    assert "p4ss" not in repr(Endpoint("x", password="p4ss"))


def test_a_raw_list_of_enum_objects_reads_by_their_names():
    xml = ('<Obj RefId="0"><TN RefId="0"><T>Deserialized.Microsoft.Exchange.Management.RecipientTasks.'
           'MailboxAcePresentationObject</T><T>Deserialized.System.Object</T></TN><Props>'
           '<S N="User">CONTOSO\\jdoe</S><B N="Deny">false</B>'
           '<Obj N="AccessRights" RefId="1"><TN RefId="1"><T>Deserialized.Microsoft.Exchange.Management.'
           'RecipientTasks.MailboxRights[]</T><T>Deserialized.System.Array</T><T>Deserialized.System.Object</T></TN>'
           '<LST><Obj RefId="2"><ToString>FullAccess</ToString><I32>1</I32></Obj>'
           '<Obj RefId="3"><ToString>ReadPermission</ToString><I32>131072</I32></Obj></LST></Obj>'
           '</Props></Obj>')
    record = as_dict(Serializer().deserialize(xml))
    assert record["AccessRights"] == ["FullAccess", "ReadPermission"] and record["Deny"] is False
