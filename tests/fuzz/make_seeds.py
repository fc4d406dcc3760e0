#!/usr/bin/env python3
"""Writes the seed corpus in tests/fuzz/seeds/<target>/ (run from anywhere).

The seeds are the inputs of the test suites, in the shape each target reads:
real PDUs, receipt texts, UDH parts, JSON bodies, the countries file.
Add a seed by adding it here (or dropping a small file into the target's
folder) and committing it.
"""
import json
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds")


def write(target, name, data):
    os.makedirs(os.path.join(ROOT, target), exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(ROOT, target, name), "wb") as f:
        f.write(data)


def cstr(s):
    return s.encode() + b"\0"


def tlv(tag, value):
    return struct.pack(">HH", tag, len(value)) + value


def deliver_sm_body(esm, dc, sm, tlvs=b"", src="447400777888", dst="ACME"):
    return (cstr("") + bytes([1, 1]) + cstr(src) + bytes([5, 0]) + cstr(dst)
            + bytes([esm, 0, 0]) + cstr("") + cstr("") + bytes([0, 0, dc, 0, len(sm)])
            + sm + tlvs)


def command(cid, body=b"", status=0, seq=1):
    """A PDU after its length prefix: command_id, status, sequence, body."""
    return struct.pack(">III", cid, status, seq) + body


def frame(cmd):
    return struct.pack(">I", 4 + len(cmd)) + cmd


RECEIPT = "id:0A1B2c sub:001 dlvrd:001 submit date:2511201230 done date:2511201231 stat:DELIVRD err:000 text:Your code is"
RECEIPTS = [
    RECEIPT,
    "id:1 stat:DELIVRD err:000 text:id:2 stat:UNDELIV err:999",
    "id:7 prepaid:yes substat:x stat:ACCEPTD",
    "id:77 stat:REJECTD err:0B",
    "ID : msg_42 Submit_Date:2511201230 STATUS:undeliv Err:034",
    "id:000123 stat:DELIVRD",
]
UDH = bytes([0x05, 0x00, 0x03, 0x07, 0x02, 0x01])
UDH16 = bytes([0x06, 0x08, 0x04, 0xAB, 0xCD, 0x02, 0x02])

deliver_receipt = deliver_sm_body(0x04, 0, RECEIPT.encode(),
                                  tlv(0x001E, cstr("0A1B2c")) + tlv(0x0427, bytes([2]))
                                  + tlv(0x0423, bytes([3, 0, 27])))
deliver_payload = deliver_sm_body(0x04, 0, b"", tlv(0x0424, RECEIPTS[3].encode()))
deliver_ucs2 = deliver_sm_body(0x04, 8, RECEIPTS[1].encode("utf-16-be"))
mo_udh = deliver_sm_body(0x40, 0, UDH + b"Hello ")
mo_sar = deliver_sm_body(0x00, 0, b" world", tlv(0x020C, b"\x12\x34") + tlv(0x020E, b"\x02")
                         + tlv(0x020F, b"\x02"))
mo_ucs2 = deliver_sm_body(0x40, 8, UDH16 + "Привет 😀".encode("utf-16-be"))
pdus = {
    "deliver_sm_receipt": command(0x05, deliver_receipt, seq=7),
    "deliver_sm_payload": command(0x05, deliver_payload, seq=8),
    "deliver_sm_ucs2": command(0x05, deliver_ucs2, seq=9),
    "deliver_sm_mo_udh": command(0x05, mo_udh, seq=10),
    "deliver_sm_mo_sar": command(0x05, mo_sar, seq=11),
    "deliver_sm_mo_ucs2": command(0x05, mo_ucs2, seq=12),
    "submit_sm_resp": command(0x80000004, cstr("0A1B2c"), seq=3),
    "submit_sm_resp_throttled": command(0x80000004, cstr(""), status=0x58, seq=5),
    "bind_transceiver_resp": command(0x80000009, cstr("smsc") + tlv(0x0210, b"\x34"), seq=1),
    "enquire_link": command(0x15, seq=99),
    "generic_nack": command(0x80000000, status=3, seq=4),
    "unbind": command(0x06, seq=100),
}
for name, cmd in pdus.items():
    write("smpp_pdu", name, cmd)
    write("smpp_frames", name, b"\x05" + frame(cmd))
write("smpp_frames", "session", b"\x03" + b"".join(frame(c) for c in pdus.values()))
write("smpp_frames", "split_frame", b"\x00" + frame(pdus["deliver_sm_receipt"]) + frame(pdus["enquire_link"])[:9])

for i, text in enumerate(RECEIPTS):
    write("dlr_receipt", f"text_{i}", text)
for name, body in [("tlvs", deliver_receipt), ("payload", deliver_payload), ("ucs2", deliver_ucs2)]:
    write("dlr_receipt", f"deliver_sm_{name}", b"\x00" + body)
write("dlr_receipt", "built_receipt", b"\x01\x04\x00" + RECEIPT.encode())
write("dlr_receipt", "built_payload", b"\x03\x04\x00" + RECEIPTS[3].encode())
write("dlr_receipt", "built_udh", b"\x01\x44\x00" + UDH + RECEIPTS[0].encode())


def part(flags, esm, dc, sm):
    return bytes([flags, esm, dc, len(sm)]) + sm


hello = "Привет, это длинное сообщение 😀 из трёх частей".encode("utf-16-be")
write("mo_reassembly", "gsm_two_parts",
      b"\x00" + part(0, 0x40, 0, bytes([5, 0, 3, 1, 2, 2]) + b"world")
      + part(0, 0x40, 0, bytes([5, 0, 3, 1, 2, 1]) + b"Hello "))
write("mo_reassembly", "ucs2_split_pair",
      b"\x00" + b"".join(part(0, 0x40, 8, bytes([5, 0, 3, 7, 3, i + 1]) + hello[a:b])
                         for i, (a, b) in enumerate([(0, 62), (62, 80), (80, len(hello))])))
write("mo_reassembly", "udh16_and_single",
      b"\x00" + part(0, 0x40, 0, bytes([6, 8, 4, 0xAB, 0xCD, 2, 2]) + b"TOP")
      + part(1, 0x00, 0, b"STOP") + part(0, 0x40, 0, bytes([6, 8, 4, 0xAB, 0xCD, 2, 1]) + b"S"))
write("mo_reassembly", "packed_incomplete",
      b"\x01" + part(2, 0x40, 0, bytes([5, 0, 3, 9, 3, 1, 0x90, 0x65, 0x36])) + part(6, 0, 0, b"x"))

TEXTS = [
    "Your code is 123456",
    "Café 5€ {ok} Δ [test] ~^|\\",
    "Ваш код 😀 " * 12,
    "Your parcel is on its way. " * 19,
    "a" * 160,
    "a" * 161,
    "ç and \u00a0 and \f",
]
for i, text in enumerate(TEXTS):
    write("encoding", f"text_{i}", b"\x00" + text.encode())
write("encoding", "ucs2_payload", b"\x08" + "Привет 😀".encode("utf-16-be"))
write("encoding", "udh_payload", b"\x00" + UDH + b"Hello")
write("encoding", "latin1", b"\x03" + "Café".encode("latin-1"))

SENDS = [
    {"to": "+447400123456", "from": "ACME", "text": "Your code is 123456"},
    {"to": "+12025550143", "from": "ACME", "text": "code 1", "kind": "otp"},
    {"to": "+33612345678", "from": "ACME", "text": "Promo -50% STOP au 36180", "kind": "marketing",
     "validity_s": 3600, "send_at": "2026-01-02T09:30:00Z", "client_ref": "r-1",
     "callback_url": "https://example.com/hook"},
    {"to": "+447400123456", "text": "Ваш код 😀 " * 12},
    {"to": "+447400123456", "from": "ACME", "text": "x", "callback_url": "ftp://x"},
    {"to": 447400123456, "from": "ACME", "text": "x"},
    {"to": "+447400123456", "from": "ACME", "text": "x", "send_at": "tomorrow"},
]
for i, body in enumerate(SENDS):
    write("api_send", f"send_{i}", json.dumps(body, ensure_ascii=False))
write("api_batch", "batch_mixed", json.dumps({"messages": SENDS}, ensure_ascii=False))
write("api_batch", "batch_one", json.dumps({"messages": [SENDS[0]]}))
write("api_batch", "batch_empty", json.dumps({"messages": []}))
write("api_batch", "batch_bad_item", json.dumps({"messages": [SENDS[1], {"to": 1}, "text"]}))

with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../config/countries.toml"),
          "rb") as f:
    write("countries", "countries.toml", f.read())
write("countries", "small.toml", """[default]
max_segments = 6

[countries.FR]
marketing_requires_consent = true
marketing_window = { days = ["mon", "tue", "wed", "thu", "fri"], start = "08:00", end = "20:00" }
quiet_hours_action = "defer"
holidays = ["2026-01-01"]
timezones = ["Europe/Paris"]
blocked_patterns = ["(?i)casino"]
""")
