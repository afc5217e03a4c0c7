# Bulk TCP fixture for the end-to-end tests (shared by tests/ and agent/tests/).
#   bulk.py serve HOST:PORT...  a server on each address: `get N` receives N bytes of a fixed
#                               pattern; `put N` + N bytes gets their SHA-256 back; any
#                               other connection is closed (so plain connects work too).
#   bulk.py check HOST PORT N   the client: prints `ok` if N bytes went each way intact.
import hashlib, select, socket, sys, threading

def pattern(n):
    return (bytes(range(251)) * (n // 251 + 1))[:n]

def serve_one(c):
    with c, c.makefile('rb') as f:
        cmd = f.readline().split()
        if len(cmd) != 2:
            return
        n = int(cmd[1])
        if cmd[0] == b'get':
            c.sendall(pattern(n))
        elif cmd[0] == b'put':
            h = hashlib.sha256()
            while n > 0:
                b = f.read(min(n, 65536))
                if not b:
                    return
                h.update(b); n -= len(b)
            c.sendall(h.hexdigest().encode())

def serve(addrs):
    socks = []
    for a in addrs:
        h, p = a.rsplit(':', 1)
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((h, int(p))); s.listen(64); socks.append(s)
    print('ready', flush=True)
    while True:
        r, _, _ = select.select(socks, [], [])
        for s in r:
            c, _ = s.accept()
            threading.Thread(target=serve_one, args=(c,), daemon=True).start()

def check(host, port, n):
    data = pattern(n)
    c = socket.create_connection((host, port), timeout=60)
    c.sendall(b'get %d\n' % n)
    got = bytearray()
    while len(got) < n:
        b = c.recv(1 << 20)
        if not b:
            break
        got += b
    c.close()
    assert bytes(got) == data, 'download: %d bytes, intact: %s' % (len(got), bytes(got) == data[:len(got)])
    c = socket.create_connection((host, port), timeout=60)
    c.sendall(b'put %d\n' % n + data)
    c.shutdown(socket.SHUT_WR)
    reply = c.makefile('rb').read().decode()
    assert reply == hashlib.sha256(data).hexdigest(), 'upload digest %r' % reply
    print('ok')

if sys.argv[1] == 'serve':
    serve(sys.argv[2:])
else:
    check(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
