#!/usr/bin/env bash
# The system packages the integration tests need: a Samba AD domain controller (Samba's AD
# packages, provisioned per test run by tests/samba_dc.py), OpenLDAP's ldapsearch (LDIF
# exports and the benchmark's comparison), MIT Kerberos (kinit, and the headers the
# optional gssapi package builds against) and Chromium (the HTML report's test). Run by `make test` and `make bench`.
#
# Installs only what is missing, only as root on a Debian-like system. Elsewhere it says what
# is missing and leaves the tests to skip (loudly) or, in CI, to fail.
set -euo pipefail

packages=()
command -v samba >/dev/null && [ -d /usr/share/samba/setup ] || packages+=(samba samba-ad-dc samba-ad-provision winbind)
command -v ldbmodify >/dev/null || packages+=(ldb-tools)
command -v ldapsearch >/dev/null || packages+=(ldap-utils)
# Kerberos: kinit for the tests' ticket, the headers the optional gssapi package builds against
command -v kinit >/dev/null || packages+=(krb5-user)
command -v krb5-config >/dev/null || packages+=(libkrb5-dev)
# zivsync report --html is checked the way a person sees it: rendered in headless Chromium
command -v chromium >/dev/null || packages+=(chromium fonts-dejavu-core)
[ ${#packages[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "install-test-deps: missing ${packages[*]}; install them as root (apt-get install" \
         "--no-install-recommends ${packages[*]}) or the Samba tests will be skipped" >&2
    exit 0
fi
echo "install-test-deps: installing ${packages[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# samba-ad-provision is only *recommended* by samba-ad-dc but holds the provisioning data;
# the image's policy-rc.d keeps the packages from starting any daemon
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
