# sshq node protocol, v1: the gang agent of a multi-node job, one per rank,
# started by the rank's wrapper (gang.sh) as its coprocess: the wrapper's
# lines arrive on stdin, the agent's answers go to stdout. Rank 0's agent is
# also the gang's coordinator: it listens on a TCP port, every other rank's
# agent keeps one connection to it, and it alone decides when the gang
# starts ("go": every rank holds its GPUs), so a start is never partial.
# Nodes reach each other only this way, as the job's own ranks must
# (MASTER_ADDR is rank 0's address): nothing else on the node listens.
#
# Wrapper -> agent:  hold | release wait|park | end CODE
# Agent -> wrapper:  ready PORT|- | go ADDR PORT IP,IP... | release-ok |
#                    unpark | stop RANK CODE|lost | done
# Member <-> coordinator (TCP, one line each):
#   member: hello TOKEN RANK MODE [CODE] | hold | release MODE | end CODE | ping
#   coord:  go ADDR PORT IPS | release-ok | unpark | stop RANK CODE | ping
#
# A release is granted only before "go", by the coordinator, so a rank
# never lets its GPUs go while the others start. A rank that ends before
# the gang started, or with a non-zero code after, makes the coordinator
# stop every other rank; so does one not heard from for SSHQ_GANG_LOST
# seconds. A member that cannot reach the coordinator that long stops its
# own rank. Stopping is TERM to every process carrying the job's mark but
# the wrapper's own, the grace, then KILL; the cause goes to gang.cause.
import os
import select
import signal
import socket
import sys
import time


def env(name, default=""):
    return os.environ.get(name, default)


RANK = int(env("SSHQ_GANG_RANK", "0"))
N = int(env("SSHQ_GANG_N", "1"))
TOKEN = env("SSHQ_GANG_TOKEN")
COORD = env("SSHQ_GANG_COORD")
IPS = [ip if ip != "-" else "" for ip in env("SSHQ_GANG_IPS").split(",")]
JD = env("SSHQ_GANG_DIR", ".")
UID = env("SSHQ_JOB_UID")
LOST = float(env("SSHQ_GANG_LOST", "") or 30)
JOIN = float(env("SSHQ_GANG_JOIN", "") or 600)
GRACE = float(env("SSHQ_GANG_GRACE", "") or 10)
PING = max(0.2, min(5.0, LOST / 4))
IPS += [""] * (N - len(IPS))


def now():
    return time.monotonic()


def note(text):
    try:
        with open(os.path.join(JD, "log"), "a") as f:
            f.write("sshq: %s\n" % text)
    except OSError:
        pass


def put_file(name, text):
    tmp = os.path.join(JD, name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, os.path.join(JD, name))


class Wrapper:
    """The wrapper's end of the coprocess pipes."""

    def __init__(self):
        self.buf = b""
        self.eof = False

    def send(self, line):
        try:
            os.write(1, (line + "\n").encode())
        except OSError:
            pass

    def lines(self):
        data = os.read(0, 4096)
        if not data:
            self.eof = True
            return []
        self.buf += data
        *done, self.buf = self.buf.split(b"\n")
        return [d.decode(errors="replace").split() for d in done]


class Conn:
    """One TCP connection, line by line."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.rank = None
        self.last = now()
        self.last_ping = self.last
        sock.settimeout(5)

    def send(self, line):
        if self.sock is None:
            return False
        try:
            self.sock.sendall((line + "\n").encode())
            return True
        except OSError:
            self.close()
            return False

    def lines(self):
        try:
            data = self.sock.recv(4096)
        except OSError:
            data = b""
        if not data:
            self.close()
            return None
        self.last = now()
        self.buf += data
        if len(self.buf) > 65536:
            self.close()
            return None
        *done, self.buf = self.buf.split(b"\n")
        return [d.decode(errors="replace").split() for d in done]

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None


def plain(addr):
    # A dual-stack socket names IPv4 peers as ::ffff:a.b.c.d.
    return addr[7:] if addr.startswith("::ffff:") else addr


# ------------------------------------------------------------ stopping

def job_pids():
    spare = {os.getpid()}
    try:
        with open(os.path.join(JD, "wrapper.pid")) as f:
            spare |= {int(w) for w in f.read().split() if w.isdigit()}
    except OSError:
        pass
    mark = ("SSHQ_JOB_UID=" + UID).encode()
    out = set()
    for p in os.listdir("/proc"):
        if not p.isdigit() or int(p) in spare:
            continue
        try:
            with open("/proc/%s/environ" % p, "rb") as f:
                if mark in f.read().split(b"\0"):
                    out.add(int(p))
        except OSError:
            pass
    return out


def kill_job():
    """TERM to the rank's processes, the grace, then KILL; the wrapper
    records how the rank ended once they are gone."""
    termed = set()
    deadline = now() + GRACE
    while now() < deadline:
        pids = job_pids()
        if not pids:
            return
        for p in pids - termed:
            try:
                os.kill(p, signal.SIGTERM)
            except OSError:
                pass
            termed.add(p)
        time.sleep(0.1)
    for _ in range(20):
        pids = job_pids()
        if not pids:
            return
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.05)


class Local:
    """This rank, as its agent sees it: what the wrapper last said, and
    the stopping of its processes."""

    def __init__(self, wrapper):
        self.w = wrapper
        self.mode = "wait"  # wait | hold | park | run | ended
        self.code = None
        self.stopped = False

    def deliver(self, words):
        """A line from the coordinator for this rank."""
        kind = words[0]
        if kind == "go" and self.mode != "ended":
            self.mode = "run"
        elif kind == "release-ok" and self.mode not in ("run", "ended"):
            self.mode = words[1] if len(words) > 1 else "wait"
        elif kind == "unpark" and self.mode == "park":
            self.mode = "wait"
        elif kind == "stop":
            self.stop(words[1], words[2])
            return
        self.w.send(" ".join(words))

    def stop(self, rank, code):
        if self.stopped or self.mode == "ended":
            return
        self.stopped = True
        put_file("gang.cause", "%s %s\n" % (rank, code))
        if code == "lost":
            note("stopping: rank %s was lost (no word from it for %ds)" % (rank, LOST))
        else:
            note("stopping: rank %s ended with exit code %s" % (rank, code))
        self.w.send("stop %s %s" % (rank, code))
        if self.mode == "run":
            kill_job()


# ------------------------------------------------------------ coordinator

class Coordinator:
    def __init__(self, local):
        self.local = local
        self.t0 = now()
        self.mode = ["wait"] + [None] * (N - 1)  # None: never joined
        self.code = [None] * N
        self.conn = [None] * N
        self.last = [self.t0] * N
        self.addr = [""] * N
        self.gone = False
        self.failed = False
        self.failure = ""
        self.go_line = ""
        self.my_addr = ""
        self.pending = []  # accepted, not yet introduced
        fam = socket.AF_INET6 if socket.has_dualstack_ipv6() else socket.AF_INET
        self.srv = socket.create_server(("", 0), family=fam, dualstack_ipv6=fam == socket.AF_INET6)
        put_file("gang.port", "%d\n" % self.srv.getsockname()[1])

    def send(self, r, line):
        if r == 0:
            self.local.deliver(line.split())
        elif self.conn[r] is not None:
            self.conn[r].send(line)

    def accept(self):
        try:
            s, _ = self.srv.accept()
        except OSError:
            return
        self.pending.append(Conn(s))

    def on_line(self, c, words):
        if c.rank is None:
            # The first line must prove the member knows the job's secret.
            if len(words) < 4 or words[0] != "hello" or words[1] != TOKEN or not words[2].isdigit() \
                    or not 0 < int(words[2]) < N:
                c.close()
                return
            r = int(words[2])
            if self.conn[r] is not None and self.conn[r] is not c:
                self.conn[r].close()
            c.rank = r
            self.conn[r] = c
            self.last[r] = now()
            self.addr[r] = plain(c.sock.getpeername()[0])
            if not self.my_addr:
                self.my_addr = plain(c.sock.getsockname()[0])
            if words[3] == "ended":
                self.end(r, words[4] if len(words) > 4 else "lost")
                return
            if self.mode[r] != "ended":
                self.mode[r] = words[3]
            if self.failed:
                c.send("stop %s" % self.failure)
            elif self.gone and self.mode[r] in ("hold", "run"):
                c.send(self.go_line)
            self.check()
            return
        self.msg(c.rank, words)

    def msg(self, r, words):
        self.last[r] = now()
        kind = words[0] if words else ""
        if self.mode[r] == "ended":
            return
        if kind == "hold":
            self.mode[r] = "hold"
        elif kind == "release" and len(words) > 1:
            if not self.gone:
                self.mode[r] = words[1]
                self.send(r, "release-ok " + words[1])
        elif kind == "end" and len(words) > 1:
            self.end(r, words[1])
            return
        self.check()

    def end(self, r, code):
        if self.mode[r] == "ended":
            return
        self.mode[r] = "ended"
        self.code[r] = code
        if not self.failed and (code != "0" or not self.gone):
            self.failed = True
            self.failure = "%d %s" % (r, code)
            # The others first: stopping this rank's own processes takes
            # the grace period.
            for q in list(range(1, N)) + [0]:
                if q != r and self.mode[q] != "ended":
                    self.send(q, "stop " + self.failure)
        self.check()

    def check(self):
        if not self.gone and not self.failed and all(m == "hold" for m in self.mode):
            self.gone = True
            ips = []
            for r in range(N):
                ip = IPS[r] or (self.my_addr if r == 0 else self.addr[r])
                ips.append(ip or "127.0.0.1")
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("", 0))
                port = s.getsockname()[1]
            self.go_line = "go %s %d %s" % (ips[0], port, ",".join(ips))
            note("all %d ranks hold their GPUs: starting (MASTER_ADDR %s, MASTER_PORT %d)" % (N, ips[0], port))
            for r in list(range(1, N)) + [0]:
                self.mode[r] = "run"
                self.send(r, self.go_line)
            return
        if not self.gone and not self.failed and "park" in self.mode and \
                all(m in ("hold", "park") for m in self.mode):
            for r in range(N):
                if self.mode[r] == "park":
                    self.mode[r] = "wait"
                    self.send(r, "unpark")

    def tick(self):
        t = now()
        for r in range(1, N):
            if self.mode[r] == "ended":
                continue
            c = self.conn[r]
            if c is not None and c.sock is None:
                self.conn[r] = c = None
            limit = JOIN if self.mode[r] is None else LOST
            if t - self.last[r] > limit:
                if c is not None:
                    c.close()
                    self.conn[r] = None
                if self.mode[r] is None:
                    note("rank %d never joined the gang within %ds" % (r, JOIN))
                self.end(r, "lost")
            elif c is not None and t - c.last_ping > PING:
                c.send("ping")
                c.last_ping = t
        self.pending = [c for c in self.pending if c.sock is not None and c.rank is None and t - c.last < 10]

    def done(self):
        return all(m == "ended" for m in self.mode)

    def socks(self):
        out = {self.srv: ("srv", None)}
        for c in self.pending + [c for c in self.conn if c is not None]:
            if c.sock is not None:
                out[c.sock] = ("conn", c)
        return out


# ------------------------------------------------------------ member

class Member:
    """Rank > 0: one connection to the coordinator, kept up."""

    def __init__(self, local):
        self.local = local
        host, _, port = COORD.rpartition(":")
        self.where = (host.strip("[]"), int(port))
        self.c = None
        self.heard = now()
        self.next_try = 0
        self.reported = False
        self.end_sent = False
        # A release asked for and not yet answered: asked again on a new
        # connection, since the answer may have been lost with the old.
        self.release = None

    def hello(self):
        m = self.local.mode
        code = self.local.code if self.local.code is not None else ""
        self.c.send(("hello %s %d %s %s" % (TOKEN, RANK, m, code)).strip())

    def connect(self):
        t = now()
        if self.c is not None and self.c.sock is not None or t < self.next_try:
            return
        self.next_try = t + min(2.0, PING)
        try:
            s = socket.create_connection(self.where, timeout=5)
        except OSError:
            return
        self.c = Conn(s)
        self.heard = t
        self.hello()
        if self.local.mode == "ended":
            self.end_sent = self.c.sock is not None
        elif self.release:
            self.c.send(self.release)

    def send(self, line):
        return self.c is not None and self.c.send(line)

    def tick(self):
        t = now()
        self.connect()
        if self.c is not None and self.c.sock is not None and t - self.c.last_ping > PING:
            self.c.send("ping")
            self.c.last_ping = t
        if t - self.heard > LOST and not self.reported and self.local.mode != "ended":
            self.reported = True
            if self.c is not None:
                self.c.close()
            note("no word from rank 0 (%s) for %ds" % (COORD, LOST))
            self.local.stop(0, "lost")

    def on_lines(self, lines):
        self.heard = now()
        for words in lines:
            if words and words[0] in ("release-ok", "go"):
                self.release = None
            if words and words[0] != "ping":
                self.local.deliver(words)


# ------------------------------------------------------------ main

def close_inherited():
    # The wrapper's lock fds (leases, ticket, wrapper.lock) must not live on
    # in this process.
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2:
            try:
                os.close(fd)
            except OSError:
                pass


def main():
    close_inherited()
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    termed = []
    signal.signal(signal.SIGTERM, lambda *_: termed.append(1))
    w = Wrapper()
    local = Local(w)
    if RANK == 0:
        try:
            coord = Coordinator(local)
        except OSError as e:
            note("the gang coordinator cannot listen on a TCP port: %s" % e)
            return 3
        w.send("ready %s" % open(os.path.join(JD, "gang.port")).read().strip())
        member = None
    else:
        coord = None
        member = Member(local)
        w.send("ready -")

    def from_wrapper(words):
        if not words:
            return
        kind = words[0]
        if kind == "hold":
            local.mode = "hold"
        elif kind == "end":
            local.mode = "ended"
            local.code = words[1] if len(words) > 1 else "1"
        if coord is not None:
            if kind == "end":
                coord.end(0, local.code)
            else:
                coord.msg(0, words)
        else:
            if kind == "release":
                member.release = " ".join(words)
            if member.send(" ".join(words)) and kind == "end":
                member.end_sent = True

    ended_at = None
    while True:
        if termed:
            termed.clear()
            if local.mode != "ended":
                # Cancel ends this rank: say so, so the others stop now.
                from_wrapper(["end", "143"])
        if coord is not None:
            coord.tick()
            if coord.done():
                w.send("done")
                return 0
        else:
            member.tick()
            if local.mode == "ended":
                # Delivered, or given up after a few seconds.
                ended_at = ended_at or now()
                if member.end_sent or now() - ended_at > 5:
                    return 0
        rl = [] if w.eof else [0]
        socks = coord.socks() if coord is not None else \
            ({member.c.sock: ("conn", member.c)} if member.c is not None and member.c.sock is not None else {})
        try:
            r, _, _ = select.select(rl + list(socks), [], [], 0.25)
        except InterruptedError:
            continue
        for s in r:
            if s == 0:
                lines = w.lines()
                if w.eof and local.mode != "ended":
                    # The wrapper is gone without a word (killed): the
                    # rank is lost, as a job is without its exit record.
                    from_wrapper(["end", "lost"])
                for words in lines:
                    from_wrapper(words)
                continue
            kind, c = socks[s]
            if kind == "srv":
                coord.accept()
                continue
            lines = c.lines()
            if lines is None:
                continue
            if coord is not None:
                for words in lines:
                    if c.sock is None:
                        break
                    if words and (c.rank is None or words[0] != "ping"):
                        coord.on_line(c, words)
                    elif c.rank is not None:
                        coord.last[c.rank] = now()
            else:
                member.on_lines(lines)


if __name__ == "__main__":
    sys.exit(main())
