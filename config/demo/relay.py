"""TCP relay used by packaging/demo.sh: LISTEN_HOST LISTEN_PORT TARGET_HOST TARGET_PORT.

Makes the portal (inside the demo's gateway namespace) reachable from the host on loopback.
"""
import socket
import sys
import threading

listen_host, listen_port, target_host, target_port = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])


def pump(src, dst, done):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    with done["lock"]:
        done["n"] += 1
        if done["n"] == 2:
            src.close()
            dst.close()


server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind((listen_host, listen_port))
server.listen(64)
print("ready", flush=True)
while True:
    client, _ = server.accept()
    try:
        upstream = socket.create_connection((target_host, target_port), timeout=5)
        upstream.settimeout(None)
    except OSError:
        client.close()
        continue
    state = {"lock": threading.Lock(), "n": 0}
    threading.Thread(target=pump, args=(client, upstream, state), daemon=True).start()
    threading.Thread(target=pump, args=(upstream, client, state), daemon=True).start()
