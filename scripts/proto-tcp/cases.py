# Edge cases for the prototype's byte derivation: each case on 127.0.0.1:7000,
# PROTO_SUMS read with bpftool before and after (sockets fully closed).
import socket, struct, subprocess, json, time, sys

NAMES = ["closes","failed","connects","listens","sent","received","fin_queued","fin_read","fin_received","late_bytes"]
def sums():
    j = json.loads(subprocess.check_output(["bpftool","map","dump","name","PROTO_SUMS","-j"]))
    out = [0]*len(NAMES)
    for e in j:
        k = int.from_bytes(bytes(int(x,16) for x in e["key"]), "little")
        for v in e["values"]:
            b = bytes(int(x,16) for x in v["value"])
            out[k] += int.from_bytes(b, "little")
    return out

def listener():
    l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind(("127.0.0.1", 7000)); l.listen(16); return l

def readn(s, n):
    got = b""
    while len(got) < n:
        d = s.recv(n - len(got))
        if not d: break
        got += d
    return got

def linger0(s):
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

def case_server_closes_first(l):
    c = socket.create_connection(("127.0.0.1", 7000)); s, _ = l.accept()
    c.sendall(b"a"*100); assert len(readn(s,100)) == 100
    s.sendall(b"b"*100); s.close()
    assert len(readn(c,100)) == 100; assert c.recv(10) == b""; c.close()
    return dict(sent=200, received=200)

def case_client_half_close(l):
    c = socket.create_connection(("127.0.0.1", 7000)); s, _ = l.accept()
    c.sendall(b"a"*100); c.shutdown(socket.SHUT_WR)
    assert len(readn(s,100)) == 100; assert s.recv(10) == b""
    s.sendall(b"b"*70); s.close()
    assert len(readn(c,70)) == 70; assert c.recv(10) == b""; c.close()
    return dict(sent=170, received=170)

def case_abortive_close_reset_received(l):
    c = socket.create_connection(("127.0.0.1", 7000)); s, _ = l.accept()
    c.sendall(b"a"*100); assert len(readn(s,100)) == 100
    s.sendall(b"b"*50); assert len(readn(c,50)) == 50
    linger0(s); s.close()          # RST: the server's abortive close, the client's reset
    time.sleep(0.05)
    try: c.recv(10)
    except ConnectionResetError: pass
    c.close()
    return dict(sent=150, received=150)

def case_unread_at_close(l):
    c = socket.create_connection(("127.0.0.1", 7000)); s, _ = l.accept()
    c.sendall(b"a"*100); time.sleep(0.02)
    assert len(s.recv(40)) == 40
    s.close()                      # 60 bytes unread: a reset instead of a FIN
    time.sleep(0.05)
    try: c.recv(10)
    except ConnectionResetError: pass
    c.close()
    return dict(sent=100, received=40)

def case_unsent_at_reset(l):
    # The client queues data the peer never acknowledges: the server's
    # receive buffer is tiny and it resets with SO_LINGER 0.
    c = socket.create_connection(("127.0.0.1", 7000)); s, _ = l.accept()
    c.setblocking(False)
    total = 0
    try:
        while total < 4_000_000:
            total += c.send(b"x"*65536)
    except BlockingIOError: pass
    c.setblocking(True)
    got = len(readn(s, 1000))
    linger0(s); s.close(); time.sleep(0.05)
    try: c.recv(10)
    except ConnectionResetError: pass
    c.close()
    return dict(sent=total, received=got)

def case_refused(l):
    l.close()
    c = socket.socket()
    try: c.connect(("127.0.0.1", 7000))
    except ConnectionRefusedError: pass
    c.close()
    return dict(sent=0, received=0, failed=1)

def case_late_read(l):
    # The server sends and closes; the client half-closes without reading,
    # so it reaches CLOSE (LAST_ACK acknowledged) with 100 bytes unread,
    # and reads them afterwards.
    c = socket.create_connection(("127.0.0.1", 7000)); s, _ = l.accept()
    s.sendall(b"b"*100); s.close(); time.sleep(0.05)
    c.shutdown(socket.SHUT_WR); time.sleep(0.05)
    assert len(readn(c,100)) == 100; c.close()
    return dict(sent=100, received=100)

cases = [case_server_closes_first, case_client_half_close, case_abortive_close_reset_received,
         case_unread_at_close, case_unsent_at_reset, case_late_read, case_refused]
for f in cases:
    before = sums()
    l = listener()
    exp = f(l)
    try: l.close()
    except Exception: pass
    time.sleep(0.3)
    after = sums()
    d = dict(zip(NAMES, [a-b for a,b in zip(after, before)]))
    # The kernel's sent figure keeps the client's SYN (1 per CONNECT that did not fail).
    syn = d["connects"] - d["failed"]
    ok = d["sent"] - syn == exp["sent"] and d["received"] + d["late_bytes"] == exp["received"]
    print(f"{f.__name__:40s} {'EXACT' if ok else 'DIFF '} expected sent {exp['sent']} received {exp['received']}; "
          + " ".join(f"{k}={v}" for k,v in d.items()) + f"; sent - client SYNs = {d['sent']-syn}")
