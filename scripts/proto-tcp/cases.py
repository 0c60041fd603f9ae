# Edge cases for the TCP byte derivation at CLOSE, checked through the
# agent's output: each case runs on its own port (127.0.0.1:7000 + i), and
# the bytes both ends' flows report for that port must be the applications'.
#   cases.py run EXPECT.json        run the cases (the agent running), write what each expects
#   cases.py check EXPECT.json OUT  compare with the agent's OTLP JSON lines (after it flushed)
import socket, struct, json, time, sys

PORT = 7000
def listener():
    l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind(("127.0.0.1", PORT)); l.listen(16); return l

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
    c = socket.create_connection(("127.0.0.1", PORT)); s, _ = l.accept()
    c.sendall(b"a"*100); assert len(readn(s,100)) == 100
    s.sendall(b"b"*100); s.close()
    assert len(readn(c,100)) == 100; assert c.recv(10) == b""; c.close()
    return dict(sent=200, received=200)

def case_client_half_close(l):
    c = socket.create_connection(("127.0.0.1", PORT)); s, _ = l.accept()
    c.sendall(b"a"*100); c.shutdown(socket.SHUT_WR)
    assert len(readn(s,100)) == 100; assert s.recv(10) == b""
    s.sendall(b"b"*70); s.close()
    assert len(readn(c,70)) == 70; assert c.recv(10) == b""; c.close()
    return dict(sent=170, received=170)

def case_abortive_close_reset_received(l):
    c = socket.create_connection(("127.0.0.1", PORT)); s, _ = l.accept()
    c.sendall(b"a"*100); assert len(readn(s,100)) == 100
    s.sendall(b"b"*50); assert len(readn(c,50)) == 50
    linger0(s); s.close()          # RST: the server's abortive close, the client's reset
    time.sleep(0.05)
    try: c.recv(10)
    except ConnectionResetError: pass
    c.close()
    return dict(sent=150, received=150)

def case_unread_at_close(l):
    c = socket.create_connection(("127.0.0.1", PORT)); s, _ = l.accept()
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
    c = socket.create_connection(("127.0.0.1", PORT)); s, _ = l.accept()
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
    try: c.connect(("127.0.0.1", PORT))
    except ConnectionRefusedError: pass
    c.close()
    return dict(sent=0, received=0, failed=1)

def case_late_read(l):
    # The server sends and closes; the client half-closes without reading,
    # so it reaches CLOSE (LAST_ACK acknowledged) with 100 bytes unread,
    # and reads them afterwards.
    c = socket.create_connection(("127.0.0.1", PORT)); s, _ = l.accept()
    s.sendall(b"b"*100); s.close(); time.sleep(0.05)
    c.shutdown(socket.SHUT_WR); time.sleep(0.05)
    assert len(readn(c,100)) == 100; c.close()
    return dict(sent=100, received=100)

cases = [case_server_closes_first, case_client_half_close, case_abortive_close_reset_received,
         case_unread_at_close, case_unsent_at_reset, case_late_read, case_refused]

def run(path):
    global PORT
    expect = {}
    for i, f in enumerate(cases):
        PORT = 7000 + i
        l = listener()
        exp = f(l)
        try: l.close()
        except Exception: pass
        expect[f.__name__] = dict(exp, port=PORT)
    time.sleep(0.3)  # the last sockets' TIME_WAIT/LAST_ACK ends on loopback
    json.dump(expect, open(path, "w"))

def points(path):
    """(metric, attributes, value) of every data point the agent wrote."""
    for line in open(path):
        for rm in json.loads(line).get("resourceMetrics", []):
            for sm in rm["scopeMetrics"]:
                for m in sm["metrics"]:
                    data = m.get("sum") or m.get("gauge") or {}
                    for dp in data.get("dataPoints", []):
                        attrs = {a["key"]: next(iter(a["value"].values())) for a in dp["attributes"]}
                        v = dp.get("asInt", dp.get("asDouble", 0))
                        yield m["name"], attrs, float(v)

def check(expect_path, out_path):
    expect = json.load(open(expect_path))
    pts = list(points(out_path))
    bad = 0
    for name, exp in expect.items():
        port = str(exp["port"])
        def total(metric, direction=None):
            t = 0.0
            for m, a, v in pts:
                if m != metric: continue
                if direction and a.get("network.io.direction") != direction: continue
                role = a.get("flowscope.flow.role")
                if (role == "client" and str(a.get("network.peer.port")) == port) or \
                   (role == "server" and str(a.get("network.local.port")) == port):
                    t += v
            return t
        sent, received = total("network.flow.io", "transmit"), total("network.flow.io", "receive")
        failed = total("flowscope.tcp.connection.failed")
        ok = sent == exp["sent"] and received == exp["received"] and failed == exp.get("failed", 0)
        bad += not ok
        print(f"{name:40s} {'EXACT' if ok else 'DIFF '} expected sent {exp['sent']} received {exp['received']} "
              f"failed {exp.get('failed', 0)}; agent: sent {sent:.0f} received {received:.0f} failed {failed:.0f}")
    sys.exit(1 if bad else 0)

if __name__ == "__main__":
    if sys.argv[1] == "run": run(sys.argv[2])
    else: check(sys.argv[2], sys.argv[3])
