#!/usr/bin/env bash
# A private certificate authority for TLS tests: `private-ca.sh DIR` writes ca.pem, a server
# certificate for 127.0.0.1 (server.pem, server.key) and a client certificate (client.pem,
# client.key), all P-256, valid for two days.
set -euo pipefail
dir="${1:?usage: private-ca.sh DIR}"
mkdir -p "$dir"
cd "$dir"
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
key ca.key
openssl req -x509 -new -key ca.key -out ca.pem -days 2 -subj "/CN=sluice test CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
sign() {  # name, subject, extensions
    key "$1.key"
    openssl req -new -key "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
    printf '%s\n' "$3" > "$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -out "$1.pem" -days 2 -extfile "$1.ext" 2>/dev/null
    rm -f "$1.csr" "$1.ext"
}
sign server "/CN=127.0.0.1" $'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth'
sign client "/CN=sluice gateway" 'extendedKeyUsage=clientAuth'
