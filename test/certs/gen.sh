#!/usr/bin/env bash
# Generates the test PKI into OUTDIR (never committed): a CA, and for
# mx.example.test (+ localhost, 127.0.0.1) an ECDSA P-256 and an RSA 2048
# server certificate signed by it. Idempotent: existing files are kept.
#   test/certs/gen.sh OUTDIR
set -eu
out=${1:?usage: gen.sh OUTDIR}
mkdir -p "$out"
cd "$out"
[ -s ecdsa.pem ] && [ -s rsa.pem ] && [ -s ca.pem ] && exit 0

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
rm -f ./*.csr ext.cnf
