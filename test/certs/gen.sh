#!/usr/bin/env bash
# Generates the test PKI into OUTDIR (never committed): a CA, and for
# mx.example.test (+ localhost, 127.0.0.1) an ECDSA P-256 and an RSA 2048
# server certificate signed by it. Idempotent: existing files are kept.
#   test/certs/gen.sh OUTDIR
set -eu
out=${1:?usage: gen.sh OUTDIR}
mkdir -p "$out"
cd "$out"
[ -s ecdsa.pem ] && [ -s rsa.pem ] && [ -s ca.pem ] && [ -s expired.pem ] && [ -s soon.pem ] &&
  [ -s other.pem ] && [ -s dane-chain.pem ] && [ -s wildcardok.pem ] && exit 0

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
  -subj "/CN=smtp-tls-proxy test CA" -keyout ca.key -out ca.pem \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
ext="subjectAltName=DNS:mx.example.test,DNS:localhost,IP:127.0.0.1,IP:::1
basicConstraints=CA:FALSE
keyUsage=digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth"
printf '%s\n' "$ext" > ext.cnf
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=mx.example.test \
  -keyout ecdsa.key -out ecdsa.csr 2>/dev/null
openssl x509 -req -in ecdsa.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 \
  -extfile ext.cnf -out ecdsa.leaf 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=mx.example.test -keyout rsa.key -out rsa.csr 2>/dev/null
openssl x509 -req -in rsa.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 \
  -extfile ext.cnf -out rsa.leaf 2>/dev/null
cat ecdsa.leaf ca.pem > ecdsa.pem
cat rsa.leaf ca.pem > rsa.pem

# Bad certificates for the outbound downgrade tests, each with its key:
#   selfsigned  mx.example.test, self-signed
#   unknownca   mx.example.test, signed by a CA nobody trusts
#   wrongname   other.example.test, signed by the test CA
#   expired     mx.example.test, signed by the test CA, expired in 2020
#   wildcard    "*.test" and "m*.example.test": wildcard tricks, test CA
#   wildcard2   "*.*.test", "mx.*.test", "*.mx.example.test": more tricks, test CA
#   wildcardok  "*.example.test": a whole left-most label, matches mx.example.test
# and for the server side:
#   soon        mx.example.test, test CA, expires in 10 days (expiry warning)
#   other       other.example.test and *.other.test, test CA (SNI)
leaf() { # name subject-alt-names [signing-ca-prefix] [days]
  local name=$1 san=$2 ca=${3:-ca} days=${4:-30}
  printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' "$san" > "$name.cnf"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=${san#DNS:}" \
    -keyout "$name.key" -out "$name.csr" 2>/dev/null
  openssl x509 -req -in "$name.csr" -CA "$ca.pem" -CAkey "$ca.key" -CAcreateserial -days "$days" \
    -extfile "$name.cnf" -out "$name.pem" 2>/dev/null
}
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
  -subj /CN=mx.example.test -addext subjectAltName=DNS:mx.example.test \
  -keyout selfsigned.key -out selfsigned.pem 2>/dev/null
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
  -subj "/CN=untrusted CA" -keyout otherca.key -out otherca.pem \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null
leaf unknownca DNS:mx.example.test otherca
leaf wrongname DNS:other.example.test
leaf wildcard "DNS:*.test,DNS:m*.example.test"
leaf wildcard2 "DNS:*.*.test,DNS:mx.*.test,DNS:*.mx.example.test"
leaf wildcardok "DNS:*.example.test"
leaf soon DNS:mx.example.test ca 10
leaf other "DNS:other.example.test,DNS:*.other.test"
# expired: `openssl ca` is the only stock way to set dates in the past
mkdir -p expired.db && : > expired.db/index.txt && echo 1000 > expired.db/serial
cat > expired.db/ca.cnf <<CNF
[ca]
default_ca = c
[c]
database = expired.db/index.txt
new_certs_dir = expired.db
serial = expired.db/serial
default_md = sha256
policy = p
copy_extensions = copy
unique_subject = no
[p]
commonName = supplied
CNF
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=mx.example.test \
  -addext subjectAltName=DNS:mx.example.test -keyout expired.key -out expired.csr 2>/dev/null
openssl ca -batch -config expired.db/ca.cnf -cert ca.pem -keyfile ca.key -in expired.csr \
  -out expired.pem -startdate 20200101000000Z -enddate 20200201000000Z -notext 2>/dev/null

# For DANE-TA: an intermediate CA under the test CA, and a leaf for
# mx.example.test under it; dane-chain.pem = leaf + intermediate (what a
# server sends), dane-full.pem = the same plus the root.
printf 'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n' > int.cnf
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=smtp-tls-proxy test intermediate" \
  -keyout dane-int.key -out dane-int.csr 2>/dev/null
openssl x509 -req -in dane-int.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 \
  -extfile int.cnf -out dane-int.pem 2>/dev/null
leaf dane-leaf DNS:mx.example.test dane-int
cat dane-leaf.pem dane-int.pem > dane-chain.pem
cat dane-chain.pem ca.pem > dane-full.pem
rm -rf ./*.csr ./*.cnf expired.db
