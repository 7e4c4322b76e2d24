#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target into fuzz/corpus/<target>/.

Run once (the seeds are committed): `python3 fuzz/make_seeds.py`. It needs the `openssl` CLI
(certificates, keys and CSRs are made fresh, so running it again changes those seeds) and, for
the NVS images, ESP-IDF's generator (`pip install esp-idf-nvs-partition-gen`, which .ci/run puts
into .venv). Each input follows the layout its target documents: fields are a 16-bit
little-endian length and that many bytes (see fuzz/src/lib.rs).
"""

import hashlib
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")
# 2026-12-03T00:00:00Z, shortly after the certificates below start to be valid; the seeds carry
# their own clock, so they stay meaningful whenever they are run.
NOW = 1_796_256_000
ENDPOINT = "a1b2c3d4e5f6g7-ats.iot.eu-west-1.amazonaws.com"
DEVICE = "acorn-0001"


def field(data):
    if isinstance(data, str):
        data = data.encode()
    assert len(data) < 65536
    return struct.pack("<H", len(data)) + data


def u64(n):
    return struct.pack("<Q", n)


def write(target, name, data):
    os.makedirs(os.path.join(CORPUS, target), exist_ok=True)
    with open(os.path.join(CORPUS, target, name), "wb") as f:
        f.write(data)


def run(*args, cwd):
    subprocess.run(args, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def read(d, name):
    with open(os.path.join(d, name), "rb") as f:
        return f.read()


def make_pki(d):
    """A P-256 CA; device keys and certificates (P-256, P-384, RSA-2048) in PEM and DER; CSRs."""
    ossl = lambda *a: run("openssl", *a, cwd=d)
    ossl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key")
    ossl("req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=Acorn Fuzz CA", "-days", "7300",
         "-addext", "basicConstraints=critical,CA:TRUE", "-out", "ca.crt")
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n")
    # `ecparam -genkey` writes an EC PARAMETERS block before the SEC1 key, as some tools do.
    ossl("ecparam", "-name", "prime256v1", "-genkey", "-out", "p256.key")
    ossl("ecparam", "-name", "secp384r1", "-genkey", "-noout", "-out", "p384.key")
    ossl("genrsa", "-traditional", "-out", "rsa.key", "2048")
    ossl("genrsa", "-traditional", "-out", "rsa1024.key", "1024")
    ossl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "other.key")
    ossl("genpkey", "-algorithm", "ed25519", "-out", "ed25519.key")
    for k in ["p256", "p384", "rsa", "rsa1024", "other", "ed25519"]:
        ossl("pkey", "-in", f"{k}.key", "-out", f"{k}.p8.pem")
        ossl("pkey", "-in", f"{k}.key", "-outform", "DER", "-out", f"{k}.p8.der")
        ossl("req", "-new", "-key", f"{k}.key", "-subj", f"/CN={DEVICE}", "-out", f"{k}.csr")
        ossl("req", "-in", f"{k}.csr", "-outform", "DER", "-out", f"{k}.csr.der")
    ossl("req", "-new", "-key", "p256.key", "-subj", "/CN=acorn-0002", "-out", "wrongcn.csr")
    ossl("req", "-new", "-key", "p256.key", "-subj", "/O=Acorn", "-out", "nocn.csr")
    ossl("ec", "-in", "p256.key", "-outform", "DER", "-out", "p256.sec1.der")
    ossl("rsa", "-in", "rsa.key", "-traditional", "-outform", "DER", "-out", "rsa.p1.der")
    ossl("pkcs8", "-topk8", "-in", "p256.key", "-v2", "aes256", "-passout", "pass:fuzz",
         "-out", "p256.enc.pem")
    for k in ["p256", "p384", "rsa"]:
        ossl("x509", "-req", "-in", f"{k}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "3650", "-extfile", "ext.cnf", "-out", f"{k}.crt")
        ossl("x509", "-in", f"{k}.crt", "-outform", "DER", "-out", f"{k}.der")
    ossl("x509", "-in", "ca.crt", "-outform", "DER", "-out", "ca.der")


def der_of_pem(pem):
    import base64
    lines = [l for l in pem.decode().splitlines() if l and not l.startswith("-----")]
    return base64.b64decode("".join(lines))


def fingerprint(cert):
    der = cert if cert[:1] == b"\x30" else der_of_pem(cert)
    return hashlib.sha256(der).hexdigest()


def certs_validate(p):
    def seed(name, cert, key, flags=0x07, now=NOW, endpoint=ENDPOINT, device=DEVICE, ca=None,
             fp=None):
        ca = p["ca.crt"] if ca is None else ca
        fp = fingerprint(cert) if fp is None else fp
        write("certs_validate", name, bytes([flags]) + u64(now) + field(cert) + field(key)
              + field(endpoint) + field(device) + field(ca) + field(fp))

    seed("p256-pem-sec1-valid", p["p256.crt"], p["p256.key"], flags=0x06)
    seed("p256-der-pkcs8der", p["p256.der"], p["p256.p8.der"], flags=0x02, ca=p["ca.der"])
    seed("p256-pem-sec1der", p["p256.crt"], p["p256.sec1.der"], flags=0x00)
    seed("p384-pem-pkcs8-localhost", p["p384.crt"], p["p384.p8.pem"], flags=0x03,
         endpoint="localhost")
    seed("rsa-pem-pkcs1", p["rsa.crt"], p["rsa.key"], flags=0x06)
    seed("rsa-der-pkcs1der", p["rsa.der"], p["rsa.p1.der"], flags=0x0a)
    seed("rsa-pkcs8", p["rsa.crt"], p["rsa.p8.pem"], flags=0x00)
    seed("mismatched-key", p["p256.crt"], p["other.key"], flags=0x06)
    seed("rsa-cert-ec-key", p["rsa.crt"], p["p256.key"], flags=0x00)
    seed("ca-as-device", p["ca.crt"], p["ca.key"], flags=0x00)
    seed("swapped", p["p256.key"], p["p256.crt"], flags=0x00)
    seed("encrypted-key", p["p256.crt"], p["p256.enc.pem"], flags=0x00)
    seed("legacy-endpoint", p["p256.crt"], p["p256.key"], flags=0x00,
         endpoint="a1b2c3d4e5f6g7.iot.eu-west-1.amazonaws.com")
    seed("endpoint-with-port", p["p256.crt"], p["p256.key"], flags=0x00,
         endpoint="mqtts://" + ENDPOINT + ":8883")
    seed("clock-not-synced", p["p256.crt"], p["p256.key"], flags=0x00, now=0)
    seed("expired", p["p256.crt"], p["p256.key"], flags=0x00, now=4_102_444_800)
    seed("wrong-fingerprint", p["p256.crt"], p["p256.key"], flags=0x04, fp="00" * 32)
    seed("untrusted-issuer", p["p256.crt"], p["p256.key"], flags=0x02, ca=p["p256.crt"])
    seed("bad-device-id", p["p256.crt"], p["p256.key"], flags=0x00, device="acorn/0001")
    seed("material-only", p["p384.der"], p["p384.p8.der"], flags=0x08)
    seed("bundle", p["p256.crt"] + p["ca.crt"], p["p256.p8.pem"], flags=0x02)
    seed("truncated", p["p256.crt"][:300], p["p256.key"], flags=0x00)


def kv_entry(selector, kind, value, name=None):
    out = bytes([selector, kind])
    if name is not None:
        out += field(name)
    return out + field(value)


def meta(cert, endpoint=ENDPOINT, device=DEVICE, attempts=0):
    return json.dumps({
        "stored_at": NOW - 86400, "device_id": device, "certificate_fingerprint": fingerprint(cert),
        "iot_endpoint": endpoint, "is_valid": True, "last_used": None,
        "validation_attempts": attempts,
    }, separators=(",", ":")).encode()


def certs_store(p):
    BLOB, STR, U8 = 0, 1, 2

    def identity(cert, key, endpoint=ENDPOINT, m=None, valid=1, key_kind=STR):
        m = meta(cert, endpoint) if m is None else m
        return [kv_entry(0, BLOB, cert), kv_entry(1, key_kind, key + b"\0" if key_kind == STR else key),
                kv_entry(2, STR, endpoint.encode() + b"\0"), kv_entry(3, BLOB, m),
                kv_entry(4, U8, bytes([valid]))]

    def seed(name, entries, new, flags=0x02, cut=6, now=NOW):
        cert, key, endpoint, device = new
        write("certs_store", name, u64(now) + bytes([flags, cut, len(entries)]) + b"".join(entries)
              + field(cert) + field(key) + field(endpoint) + field(device))

    p256 = (p["p256.crt"], p["p256.key"], ENDPOINT, DEVICE)
    rsa = (p["rsa.der"], p["rsa.p1.der"], ENDPOINT, "acorn-0002")
    seed("p256-loads-rsa-stored", identity(p["p256.crt"], p["p256.key"]), rsa)
    seed("rsa-der-loads", identity(p["rsa.der"], p["rsa.p1.der"], key_kind=BLOB), p256, cut=3)
    seed("empty-store-p256", [], p256, cut=7)
    seed("cut-before-first-write", identity(p["p256.crt"], p["p256.key"]), rsa, cut=0)
    seed("cut-after-first-write", identity(p["p384.crt"], p["p384.p8.pem"]), p256, cut=1)
    seed("not-valid-flag", identity(p["p256.crt"], p["p256.key"], valid=0), p256, cut=5)
    seed("mismatched-key", identity(p["p256.crt"], p["other.key"]), rsa)
    seed("wrong-fingerprint", identity(p["p256.crt"], p["p256.key"], m=meta(p["rsa.crt"])), p256)
    seed("other-endpoint-in-meta",
         identity(p["p256.crt"], p["p256.key"], m=meta(p["p256.crt"], endpoint="x-ats.iot.us-east-1.amazonaws.com")),
         p256, flags=0x00)
    seed("bad-meta-json", identity(p["p256.crt"], p["p256.key"], m=b'{"stored_at":1'), p256)
    seed("localhost-custom", identity(p["p384.der"], p["p384.p8.der"], endpoint="localhost", key_kind=BLOB),
         (p["p256.crt"], p["p256.key"], "localhost", DEVICE), flags=0x03)
    seed("cert-valid-as-blob", identity(p["p256.crt"], p["p256.key"])[:4] + [kv_entry(4, BLOB, b"\x01")], p256)
    seed("stray-key", identity(p["p256.crt"], p["p256.key"]) + [kv_entry(9, BLOB, b"x", name="wifi_pass")], p256)
    seed("clock-not-synced", identity(p["p256.crt"], p["p256.key"]), p256, now=1000)
    seed("refused-new-set", identity(p["p256.crt"], p["p256.key"]),
         (p["p256.crt"], p["other.key"], ENDPOINT, DEVICE))


def mqtt_inbound():
    SETTINGS, COMMANDS, STATUS, OTHER, CUSTOM, WAIT = range(6)

    def msg(op, payload, topic=None):
        out = bytes([op])
        if op == CUSTOM:
            out += field(topic)
        return out + field(payload)

    def wait(steps):
        return bytes([WAIT]) + struct.pack("<H", steps)

    seeds = {
        "settings-valid": [msg(SETTINGS, '{"requestId":"req-42","soundVolume":7,"ledBrightness":20}')],
        "settings-all": [msg(SETTINGS, '{"requestId":"r1","soundEnabled":false,"soundVolume":10,"ledBrightness":0,"cooldownMs":600000}'),
                         msg(SETTINGS, '{"cooldownMs":0}')],
        "settings-out-of-range": [msg(SETTINGS, '{"requestId":"req-4","soundVolume":99}'),
                                  msg(SETTINGS, '{"ledBrightness":101}'),
                                  msg(SETTINGS, '{"cooldownMs":600001}'),
                                  msg(SETTINGS, '{"soundVolume":0}'),
                                  msg(SETTINGS, '{"soundVolume":-1}'),
                                  msg(SETTINGS, '{"cooldownMs":1e3}')],
        "settings-malformed": [msg(SETTINGS, "{not json"), msg(SETTINGS, "[1,2]"),
                               msg(SETTINGS, '{"requestId":"typo","volume":3}'),
                               msg(SETTINGS, '{"requestId":"empty"}'),
                               msg(SETTINGS, '{"soundEnabled":"yes"}'), msg(SETTINGS, "")],
        "commands": [msg(COMMANDS, '{"requestId":"req-1","command":"ping"}'),
                     msg(COMMANDS, '{"requestId":"req-2","command":"get-status"}'),
                     msg(COMMANDS, '{"requestId":"req-3","command":"self-destruct"}'),
                     msg(COMMANDS, '{"command":"ping"}'),
                     msg(COMMANDS, '{"requestId":"","command":"ping"}')],
        "reconnect-then-settings": [msg(COMMANDS, '{"requestId":"req-9","command":"reconnect"}'),
                                    wait(600), msg(SETTINGS, '{"requestId":"after","soundVolume":3}')],
        "long-request-id": [msg(COMMANDS, json.dumps({"requestId": "x" * 64, "command": "ping"})),
                            msg(COMMANDS, json.dumps({"requestId": "x" * 65, "command": "ping"}))],
        "wrong-topics": [msg(STATUS, '{"requestId":"x","command":"ping"}'),
                         msg(OTHER, '{"soundVolume":3}'),
                         msg(CUSTOM, '{"requestId":"c","command":"ping"}', topic="acorn-pups/commands/acorn-0001/extra"),
                         msg(CUSTOM, '{"soundVolume":2}', topic="acorn-pups/settings/acorn-0001")],
        "unicode-and-escapes": [msg(SETTINGS, '{"requestId":"\\u00e9\\ud83d\\ude00","soundVolume":4}'),
                                msg(COMMANDS, '{"requestId":"\\"quoted\\"","command":"ping"}')],
        "duplicate-fields": [msg(SETTINGS, '{"soundVolume":5,"soundVolume":99}')],
        "waits": [wait(100), msg(SETTINGS, '{"cooldownMs":250}'), wait(3000),
                  msg(COMMANDS, '{"requestId":"s","command":"get-status"}')],
    }
    for name, steps in seeds.items():
        write("mqtt_inbound", name, b"".join(s if isinstance(s, bytes) else s for s in steps))


def mqtt_codec():
    def rl(n):
        out = b""
        while True:
            b = n % 128
            n //= 128
            out += bytes([b | (0x80 if n else 0)])
            if not n:
                return out

    def publish(topic, payload, pid=None, dup=False, retain=False):
        qos = 1 if pid is not None else 0
        body = struct.pack(">H", len(topic)) + topic + (struct.pack(">H", pid) if pid else b"") + payload
        return bytes([0x30 | (0x08 if dup else 0) | (qos << 1) | (1 if retain else 0)]) + rl(len(body)) + body

    settings = b'{"requestId":"req-42","soundVolume":7}'
    connack = bytes([0x20, 2, 0, 0])
    suback = bytes([0x90, 4, 0, 1, 1, 1])
    seeds = {
        "session": connack + suback + publish(b"acorn-pups/settings/acorn-0001", settings, pid=7)
                   + bytes([0x40, 2, 0, 1, 0xd0, 0]),
        "connack-present-refused": bytes([0x20, 2, 1, 0, 0x20, 2, 0, 5]),
        "suback-failure": bytes([0x90, 3, 0, 2, 0x80]),
        "publish-qos0": publish(b"acorn-pups/commands/acorn-0001", b'{"requestId":"r","command":"ping"}'),
        "publish-qos2-dup-retain": bytes([0x3d]) + rl(9) + struct.pack(">H", 3) + b"a/b" + struct.pack(">H", 9) + b"hi",
        "oversized-publish": publish(b"t/x", bytes(200), pid=5) + bytes([0xd0, 0]),
        "unsuback-pingresp": bytes([0xb0, 2, 0, 3, 0xd0, 0]),
        "bad-remaining-length": bytes([0x30, 0xff, 0xff, 0xff, 0xff, 0x01]),
        "puback-short": bytes([0x40, 0]),
        "publish-topic-past-end": bytes([0x32, 3, 0, 9, ord("a")]),
        "connect-from-broker": bytes([0x10, 0x0c, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 60, 0, 0]),
        "two-byte-length": publish(b"acorn-pups/settings/acorn-0001", b"{" + b" " * 200 + b"}", pid=300),
    }
    for name, stream in seeds.items():
        # First byte: the receive buffer size (16 + 16 * n); second: how the stream is cut.
        cap = 0 if name == "oversized-publish" else 255
        write("mqtt_codec", name, bytes([cap, 0x5a]) + stream)


def nvs_ops():
    # The `arbitrary` crate reads these bytes as a partition size, a flag and a sequence of
    # operations: random bytes of a few sizes are as meaningful a start as any.
    rng = random.Random(16)
    for i, size in enumerate([16, 64, 128, 256, 512, 1024, 2048, 4096]):
        write("nvs_ops", f"random-{i}-{size}", bytes(rng.getrandbits(8) for _ in range(size)))


CSV_BASIC = """key,type,encoding,value
mqtt_certs,namespace,,
cert,data,string,hello-certificate
b,data,hex2bin,{hex}
v,data,u8,1
settings,namespace,,
x,data,i64,-5
"""

CSV_TYPES = """# every encoding the generator knows
key,type,encoding,value
types,namespace,,
u8,data,u8,255
i8,data,i8,-128
u16,data,u16,0xffff
i16,data,i16,-32768
u32,data,u32,4294967295
i32,data,i32,-2147483648
u64,data,u64,18446744073709551615
i64,data,i64,-9223372036854775808
s,data,string,"a ""quoted"", comma"
empty,data,string,
b64,data,base64,aGVsbG8gd29ybGQ=
bin,data,binary,raw bytes\r
hex,data,hex2bin,deadbeef
"""


def nvs_csv(p):
    cert = p["p256.crt"].decode().replace("\n", "\\n")
    factory = ("key,type,encoding,value\r\nmqtt_certs,namespace,,\r\n"
               f"device_cert,data,string,\"{cert}\"\r\n"
               f"iot_endpoint,data,string,{ENDPOINT}\r\ncert_valid,data,u8,1\r\n"
               "wifi,namespace,,\r\nssid,data,string,acorn-lab\r\n")
    seeds = {
        "basic-v2": (0x03, CSV_BASIC.format(hex="ab" * 3000)),
        "basic-encrypted": (0x0b, CSV_BASIC.format(hex="ab" * 300)),
        "basic-v1": (0x13, CSV_BASIC.format(hex="ab" * 300)),
        "types": (0x02, CSV_TYPES),
        "factory-crlf": (0x05, factory),
        "too-small": (0x00, CSV_BASIC.format(hex="cd" * 5000)),
        "columns-reordered": (0x02, "value,key,encoding,type\n,ns,,namespace\n7,k,u32,data\n"),
        "errors": (0x02, "key,type,encoding,value\nk,data,u8,1\n"),
        "bad-values": (0x02, "key,type,encoding,value\nns,namespace,,\na,data,u8,256\nb,data,hex2bin,abc\n"),
        "long-key": (0x02, "key,type,encoding,value\nns,namespace,,\nkey_longer_than_15,data,u8,1\n"),
        "file-row": (0x02, "key,type,encoding,value\nns,namespace,,\nf,file,binary,/etc/hostname\n"),
        "duplicate-keys": (0x02, "key,type,encoding,value\nns,namespace,,\nk,data,u8,1\nk,data,string,two\nother,namespace,,\nk,data,u8,3\nns,namespace,,\nz,data,i32,-1\n"),
    }
    for name, (flags, text) in seeds.items():
        write("nvs_csv", name, bytes([flags]) + text.encode())


def nvs_mount(d):
    gen = [os.path.join(HERE, "..", ".venv", "bin", "python"), "-m", "esp_idf_nvs_partition_gen"]
    if not os.path.exists(gen[0]):
        gen[0] = sys.executable
    with open(os.path.join(d, "s.csv"), "w") as f:
        f.write(CSV_BASIC.format(hex="ab" * 3000))
    k = bytes([0x11]) * 32 + bytes([0x22]) * 32  # the fixed key the fuzz target uses
    with open(os.path.join(d, "k.bin"), "wb") as f:
        f.write(k + struct.pack("<I", zlib.crc32(k, 0xFFFFFFFF) & 0xFFFFFFFF) + b"\xff" * (4096 - 68))
    run(*gen, "generate", "s.csv", "p.bin", "0x4000", cwd=d)
    run(*gen, "encrypt", "s.csv", "e.bin", "0x4000", "--inputkey", "k.bin", cwd=d)
    plain, enc = read(d, "p.bin"), read(d, "e.bin")
    # First byte: page count - 1 (bits 0-1), encrypted (bit 2), keep the rest erased (bit 3).
    write("nvs_mount", "plain", bytes([0x03]) + plain)
    write("nvs_mount", "encrypted", bytes([0x07]) + enc)
    write("nvs_mount", "partial", bytes([0x0b]) + plain[:3000])
    write("nvs_mount", "one-page", bytes([0x00]) + plain[:4096])


def backend_register(p):
    def body(name, csr=None, key_type=None, **fields):
        req = {"deviceId": DEVICE, "serialNumber": "SN-0001", "macAddress": "aa:bb:cc:dd:ee:0f",
               "firmwareVersion": "1.0.0"}
        req.update(fields)
        if csr is not None:
            req["csr"] = csr.decode() if isinstance(csr, bytes) else csr
        if key_type is not None:
            req["keyType"] = key_type
        write("backend_register", name, b"\x00" + json.dumps(req).encode())

    def der(name, csr_der, device=DEVICE):
        write("backend_register", name, b"\x01" + field(device) + field(csr_der))

    for k in ["p256", "p384", "rsa", "rsa1024", "ed25519"]:
        body(f"csr-{k}", csr=p[f"{k}.csr"])
        der(f"der-{k}", p[f"{k}.csr.der"])
    body("csr-wrong-cn", csr=p["wrongcn.csr"])
    body("csr-no-cn", csr=p["nocn.csr"])
    tampered = bytearray(p["p256.csr.der"])
    tampered[-10] ^= 1
    der("der-bad-signature", bytes(tampered))
    der("der-cn-mismatch", p["p256.csr.der"], device="acorn-0002")
    body("keygen-default")
    body("keygen-rsa", key_type="RSA-2048")
    body("keygen-unknown", key_type="ed25519")
    body("csr-and-keytype", csr=p["p256.csr"], key_type="p256")
    body("mac-dashes", macAddress="AA-BB-CC-DD-EE-0F")
    body("bad-fields", deviceId="acorn 1", serialNumber="", macAddress="aa:bb", firmwareVersion="1 0")
    body("csr-not-pem", csr="MIIB")
    write("backend_register", "not-json", b"\x00{\"deviceId\":")


def provisioning_answers(p):
    """Answers of AWS IoT's provisioning API (payloads as AWS documents them) to the claim
    client and the rotating device core: ops 0-3 the four answer topics, 4 a named topic,
    5 time passing, 6 a dropped connection."""
    cert = p["p256.crt"].decode()
    accepted = json.dumps({"certificateId": "a" * 64, "certificatePem": cert,
                           "certificateOwnershipToken": "token-1"})
    registered = json.dumps({"deviceConfiguration": {"iotEndpoint": ENDPOINT},
                             "thingName": DEVICE})
    rejected = json.dumps({"statusCode": 400, "errorCode": "InvalidCsr",
                           "errorMessage": "the CSR is not valid"})
    throttled = json.dumps({"statusCode": 429, "errorCode": "ThrottlingException",
                            "errorMessage": "Rate exceeded"})
    op = lambda n, payload=b"": bytes([n]) + field(payload)
    wait = lambda steps: bytes([5]) + struct.pack("<H", steps)
    seed = lambda name, data: write("provisioning_answers", name, data)
    seed("happy-path", op(0, accepted) + op(2, registered) + wait(50))
    seed("csr-rejected", op(1, rejected) + wait(0xFFFF))
    seed("throttled-register", op(0, accepted) + op(3, throttled))
    seed("another-thing", op(0, accepted) + op(2, registered.replace(DEVICE, "acorn-0002")))
    seed("register-first", op(2, registered) + op(0, accepted))
    seed("dropped-mid-way", op(0, accepted) + bytes([6]) + op(2, registered))
    seed("other-topic", bytes([4]) + field("$aws/certificates/create-from-csr/json/accepted/x") + field(accepted))
    seed("not-json", op(0, b"{\"certificatePem\":") + op(2, b"\xff"))


def server_chain():
    """Chains a server may send, from the fixed PKI in fuzz/fixtures/chain (see its make.py)."""
    # Fixture indices, as in fuzz_targets/server_chain.rs.
    ix = {name: i for i, name in enumerate([
        "leaf", "inter", "root", "direct", "inter_expired", "notca", "under_notca", "impostor",
        "under_impostor", "rsa_inter", "rsa_leaf", "p384_inter", "p384_leaf", "other_host",
        "no_san", "root2", "under_root2"])}

    def seed(name, *entries, host=0, clock=0, roots=1, host_text="", now=0):
        data = bytes([host]) + (field(host_text) if host == 5 else b"")
        data += bytes([clock]) + (u64(now) if clock == 3 else b"") + bytes([roots])
        for e in entries:
            data += e
        write("server_chain", name, data)

    def f(name):
        return bytes([0, ix[name]])

    seed("leaf-inter", f("leaf"), f("inter"))
    seed("leaf-inter-root", f("leaf"), f("inter"), f("root"))
    seed("inter-then-leaf-order", f("leaf"), f("root"), f("inter"))
    seed("wildcard-host", f("leaf"), f("inter"), host=1)
    seed("wildcard-two-labels", f("leaf"), f("inter"), host=2)
    seed("ip-host", f("leaf"), f("inter"), host=3)
    seed("other-host", f("leaf"), f("inter"), host=4)
    seed("raw-host", f("leaf"), f("inter"), host=5, host_text="BROKER.fuzz.test.")
    seed("direct", f("direct"))
    seed("expired-inter-first", f("leaf"), f("inter_expired"), f("inter"))
    seed("expired-inter-only", f("leaf"), f("inter_expired"))
    seed("before-dates", f("leaf"), f("inter"), clock=1)
    seed("after-dates", f("leaf"), f("inter"), clock=2)
    seed("raw-clock", f("leaf"), f("inter"), clock=3, now=1_700_000_000)
    seed("not-a-ca", f("under_notca"), f("notca"))
    seed("impostor-root", f("under_impostor"), f("impostor"))
    seed("impostor-trusted", f("under_impostor"), roots=5)
    seed("rsa", f("rsa_leaf"), f("rsa_inter"))
    seed("p384", f("p384_leaf"), f("p384_inter"))
    seed("no-san", f("no_san"), f("inter"))
    seed("second-root", f("under_root2"), roots=2)
    seed("second-root-untrusted", f("under_root2"))
    seed("edited-signature", bytes([1, ix["leaf"], 1]) + struct.pack("<H", 400) + b"\x00",
         f("inter"))
    seed("cut-short", bytes([2, ix["leaf"]]) + struct.pack("<H", 200), f("inter"))
    seed("raw", bytes([3]) + field(b"\x30\x82\x01\x00" + b"\x00" * 8), f("inter"))
    seed("empty")


def tls_server():
    """Scripts of the hostile TLS server; the ops and built kinds are in fuzz_targets/tls_server.rs."""
    sh, flush, ccs, to_app = b"\x00", b"\x05\x00", b"\x08", b"\x0f"
    built = lambda kind: bytes([2, kind])
    plain_built = lambda kind: bytes([14, kind])
    app = lambda data: b"\x0b" + field(data)
    EE, CHAIN, WRONG_HOST, EXPIRED, ROGUE, LEAF_ONLY, DEVICE_CERT, CHAIN_EXTRA = range(8)
    CV, CV_ROGUE, CV_CLIENT_CONTEXT, FIN, FIN_BAD, CERT_REQ, TICKET, KEY_UPDATE = range(8, 16)
    good = sh + built(EE) + built(CHAIN) + built(CV) + built(FIN) + flush

    def seed(name, ops, rng=1, chunk=0, flags=0b101):
        write("tls_server", name, bytes([rng, chunk, flags]) + ops)

    seed("good-app", good + app(b"\x20\x02\x00\x00") + built(TICKET) + app(b"hello"))
    seed("good-records", sh + built(EE) + flush + ccs + built(CHAIN) + built(CV) + flush
         + built(FIN) + b"\x05\x20" + to_app + app(b"") + app(b"x" * 300))
    seed("good-certificate-request", sh + built(EE) + built(CERT_REQ) + built(CHAIN_EXTRA)
         + built(CV) + built(FIN) + flush + app(b"welcome"), rng=2, chunk=7, flags=0b100)
    seed("good-one-byte-reads", good + app(b"abc"), rng=3, chunk=1, flags=0b110)
    seed("bad-certificate-verify", sh + built(EE) + built(CHAIN) + built(CV_ROGUE) + built(FIN))
    seed("client-context-verify", sh + built(EE) + built(CHAIN) + built(CV_CLIENT_CONTEXT)
         + built(FIN))
    seed("wrong-host", sh + built(EE) + built(WRONG_HOST) + built(CV) + built(FIN))
    seed("expired", sh + built(EE) + built(EXPIRED) + built(CV) + built(FIN))
    seed("rogue-ca", sh + built(EE) + built(ROGUE) + built(CV_ROGUE) + built(FIN))
    seed("leaf-only", sh + built(EE) + built(LEAF_ONLY) + built(CV) + built(FIN))
    seed("device-certificate", sh + built(EE) + built(DEVICE_CERT) + built(CV) + built(FIN))
    seed("bad-finished", sh + built(EE) + built(CHAIN) + built(CV) + built(FIN_BAD))
    seed("finished-without-certificate", sh + built(EE) + built(FIN) + flush + app(b"hi"))
    seed("verify-without-certificate", sh + built(EE) + built(CV) + built(FIN))
    seed("garbage-after-hello", sh + b"\x06" + field(bytes(range(7, 90))))
    seed("encrypted-garbage", sh + b"\x0c\x16" + field(b"\x0b\x00\x00\x09" + bytes(40)))
    seed("raw-handshake", sh + b"\x03\x08" + field(b"\x00\x02\x00\x00") + built(CHAIN)
         + b"\x04" + field(b"\x14\x00\x00\x20" + bytes(32)))
    seed("alert", b"\x0a\x02\x28", flags=0)
    seed("alert-after-hello", sh + b"\x0a\x02\x30")
    seed("encrypted-alert", sh + built(EE) + b"\x09\x02\x2a")
    seed("plaintext-certificate", sh + built(EE) + plain_built(CHAIN) + built(CV) + built(FIN))
    seed("hello-extra", b"\x01" + field(b"\x00\x29\x00\x02\x00\x00") + built(EE))
    seed("oversized-record", good + b"\x0d\xff" + app(b"late"))
    seed("oversized-header", sh + b"\x06" + field(b"\x17\x03\x03\xff\xff" + bytes(64)))
    seed("key-update", good + to_app + built(KEY_UPDATE) + flush + app(b"after"))
    seed("close-notify", good + to_app + b"\x09\x01\x00" + app(b"ignored"))
    seed("two-hellos", sh + sh + good)


def main():
    if os.path.isdir(CORPUS):
        shutil.rmtree(CORPUS)
    with tempfile.TemporaryDirectory() as d:
        make_pki(d)
        p = {name: read(d, name) for name in os.listdir(d)}
        certs_validate(p)
        certs_store(p)
        mqtt_inbound()
        mqtt_codec()
        nvs_ops()
        nvs_csv(p)
        nvs_mount(d)
        backend_register(p)
        provisioning_answers(p)
    server_chain()
    tls_server()
    for target in sorted(os.listdir(CORPUS)):
        files = os.listdir(os.path.join(CORPUS, target))
        size = sum(os.path.getsize(os.path.join(CORPUS, target, f)) for f in files)
        print(f"{target}: {len(files)} seeds, {size} bytes")


if __name__ == "__main__":
    main()
