#!/bin/sh
# Regenerates the capture fixtures in this directory from real loopback traffic.
# Needs root, tcpdump, editcap, mergecap, curl and python3. The resulting files differ
# from run to run (times, ports); the tests compare against tshark or check invariants,
# not exact values, except where a test names one.
set -eu
cd "$(dirname "$0")"
FILTER='tcp port 18080 or tcp port 18081 or tcp port 18082 or udp port 18083'
WWW=$(mktemp -d)
printf 'hello from the fixture server\n' > "$WWW/hello.txt"
python3 -m http.server 18080 --bind 127.0.0.1 --directory "$WWW" >/dev/null 2>&1 &
S4=$!
python3 -m http.server 18082 --bind ::1 --directory "$WWW" >/dev/null 2>&1 &
S6=$!
trap 'kill $S4 $S6 2>/dev/null; rm -rf "$WWW"' EXIT
sleep 1

traffic() {
    # Two requests on one keep-alive connection.
    curl -s -o /dev/null -o /dev/null http://127.0.0.1:18080/hello.txt http://127.0.0.1:18080/hello.txt
    # Nothing listens on 18081: SYN answered by RST.
    curl -s -o /dev/null http://127.0.0.1:18081/ || true
    # IPv6.
    curl -s -g -o /dev/null 'http://[::1]:18082/hello.txt'
    # One UDP datagram: counted as non-TCP.
    python3 -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("127.0.0.1", 18083))'
}

capture() {
    name=$1
    shift
    tcpdump --immediate-mode -U -n "$@" -w "$name" "$FILTER" 2>/dev/null &
    t=$!
    sleep 1
    traffic
    sleep 0.5
    kill -INT $t
    wait $t || true
}

capture lo-eth-us.pcap -i lo
capture lo-eth-ns.pcap -i lo --time-stamp-precision=nano
capture lo-eth-snap96.pcap -i lo -s 96
capture any-sll.pcap -i any -y LINUX_SLL
capture any-sll2.pcap -i any -y LINUX_SLL2
editcap -F pcapng lo-eth-ns.pcap lo-eth.pcapng
# Two interfaces with different link types in one pcapng file.
mergecap -F pcapng -w mixed-eth-sll2.pcapng lo-eth-us.pcap any-sll2.pcap
ls -l ./*.pcap ./*.pcapng
