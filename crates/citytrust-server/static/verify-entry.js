// Check, in the browser and from public data only, that a log entry is in
// the transparency log: its RFC 6962 leaf hash, its inclusion proof up to the
// root of a checkpoint, and the Ed25519 signature on that checkpoint (a C2SP
// signed note) by the key the log publishes at /ledger/key; and, when the log
// is witnessed, each witness's cosignature on that checkpoint (C2SP
// tlog-cosignature) under the keys listed at /ledger/witnesses.
'use strict';

(function () {
  const status = document.getElementById('proof-status');
  if (!status) return;
  const index = BigInt(status.dataset.index);
  const enc = new TextEncoder();

  function show(ok, text) {
    status.textContent = text;
    status.className = ok ? 'proof-ok' : 'proof-bad';
  }

  function b64(s) {
    const bin = atob(s);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }

  function concat(...parts) {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) { out.set(p, at); at += p.length; }
    return out;
  }

  async function sha256(bytes) {
    return new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
  }

  function same(a, b) {
    return a.length === b.length && a.every((x, i) => x === b[i]);
  }

  // RFC 9162, 2.1.3.2: the root an inclusion proof leads to.
  async function rootFrom(leafIndex, size, leaf, proof) {
    if (leafIndex >= size) throw new Error('the index is outside the tree');
    let fn = leafIndex;
    let sn = size - 1n;
    let r = leaf;
    for (const p of proof) {
      if (sn === 0n) throw new Error('the proof is too long');
      if ((fn & 1n) === 1n || fn === sn) {
        r = await sha256(concat(Uint8Array.of(1), p, r));
        while ((fn & 1n) === 0n && fn !== 0n) { fn >>= 1n; sn >>= 1n; }
      } else {
        r = await sha256(concat(Uint8Array.of(1), r, p));
      }
      fn >>= 1n;
      sn >>= 1n;
    }
    if (sn !== 0n) throw new Error('the proof is too short');
    return r;
  }

  // A C2SP signed note: the text, then a blank line, then "— name base64(id || signature)" lines.
  async function checkNote(note, verifierKey) {
    // name+hex key id+base64 key: the base64 may itself contain '+'.
    const parts = /^([^+\s]+)\+([0-9a-f]{8})\+([A-Za-z0-9+/]+=*)$/.exec(verifierKey.trim());
    if (!parts) throw new Error('the log key is not a signed-note verifier key');
    const [, name, idHex, keyB64] = parts;
    const keyBytes = b64(keyB64);
    if (keyBytes[0] !== 1 || keyBytes.length !== 33) throw new Error('the log key is not an Ed25519 key');
    const split = note.indexOf('\n\n');
    if (split < 0) throw new Error('the checkpoint is not a signed note');
    const text = note.slice(0, split + 1);
    const key = await crypto.subtle.importKey('raw', keyBytes.slice(1), { name: 'Ed25519' }, false, ['verify']);
    for (const line of note.slice(split + 2).split('\n')) {
      const m = /^\u2014 (\S+) (\S+)$/.exec(line);
      if (!m || m[1] !== name) continue;
      const sig = b64(m[2]);
      const id = Array.from(sig.slice(0, 4), b => b.toString(16).padStart(2, '0')).join('');
      if (id !== idHex || sig.length !== 68) continue;
      if (await crypto.subtle.verify({ name: 'Ed25519' }, key, sig.slice(4), enc.encode(text))) {
        const [origin, size, root] = text.split('\n');
        return { origin, size: BigInt(size), root: b64(root), name };
      }
    }
    throw new Error('no valid signature by the log\'s key on the checkpoint');
  }

  // C2SP tlog-cosignature (Ed25519 cosignature/v1): "— name base64(id ||
  // timestamp || signature)" over "cosignature/v1\ntime T\n" + the text.
  async function cosigners(note, witnessLines) {
    const split = note.indexOf('\n\n');
    const text = note.slice(0, split + 1);
    const lines = note.slice(split + 2).split('\n');
    const found = [];
    for (const w of witnessLines.split('\n')) {
      const m = /^witness (\S+) ([^+\s]+)\+([0-9a-f]{8})\+([A-Za-z0-9+/]+=*)/.exec(w.trim());
      if (!m) continue;
      const [, label, name, idHex, keyB64] = m;
      const keyBytes = b64(keyB64);
      if (keyBytes[0] !== 4 || keyBytes.length !== 33) continue;
      const key = await crypto.subtle.importKey('raw', keyBytes.slice(1), { name: 'Ed25519' }, false, ['verify']);
      for (const line of lines) {
        const s = /^\u2014 (\S+) (\S+)$/.exec(line);
        if (!s || s[1] !== name) continue;
        const sig = b64(s[2]);
        const id = Array.from(sig.slice(0, 4), b => b.toString(16).padStart(2, '0')).join('');
        if (id !== idHex || sig.length !== 76) continue;
        let time = 0n;
        for (const b of sig.slice(4, 12)) time = (time << 8n) | BigInt(b);
        if (time === 0n) continue;
        const message = enc.encode(`cosignature/v1\ntime ${time}\n${text}`);
        if (await crypto.subtle.verify({ name: 'Ed25519' }, key, sig.slice(12), message)) {
          found.push(label);
          break;
        }
      }
    }
    return found;
  }

  async function run() {
    const [entryRes, keyRes] = await Promise.all([
      fetch(`/api/v1/ledger/entries/${index}`),
      fetch('/ledger/key'),
    ]);
    if (!entryRes.ok) throw new Error(`the log answered ${entryRes.status} for entry ${index}`);
    if (!keyRes.ok) throw new Error('the log\'s key could not be fetched');
    const e = await entryRes.json();
    const verifierKey = await keyRes.text();
    const leaf = await sha256(concat(Uint8Array.of(0), enc.encode(e.encoded)));
    if (!same(leaf, b64(e.leaf_hash))) throw new Error('the entry does not hash to its leaf');
    const signed = await checkNote(e.checkpoint.note, verifierKey);
    if (signed.size !== BigInt(e.checkpoint.size)) throw new Error('the proof is against another checkpoint');
    const root = await rootFrom(index, signed.size, leaf, e.inclusion_proof.map(b64));
    if (!same(root, signed.root)) throw new Error('the inclusion proof does not lead to the signed root');
    let witnessed = '';
    const wRes = await fetch('/ledger/witnesses');
    const witnessLines = wRes.ok ? await wRes.text() : '';
    if (witnessLines.trim()) {
      const names = await cosigners(e.checkpoint.note, witnessLines);
      witnessed = names.length
        ? ` Cosigned by the witnesses ${names.join(', ')} (each cosignature checked).`
        : ' None of the log\'s witnesses has cosigned this checkpoint yet.';
    }
    show(true, `Verified in your browser: entry ${index} is in the log. Its inclusion proof leads to the root of checkpoint ${signed.size}, signed by ${signed.name}.${witnessed}`);
  }

  if (!(window.crypto && crypto.subtle)) {
    show(false, 'This browser cannot check signatures here; use citytrust verify.');
    return;
  }
  run().catch(err => show(false, `Does not verify: ${err.message}.`));
})();
