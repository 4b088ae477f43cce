// In-browser check that a ledger entry is in the signed log (docs/audit.md):
//  1. leaf hash = SHA-256(0x00 || entry bytes), when the exact bytes are shown;
//  2. RFC 9162 §2.1.3.2: the inclusion proof folds the leaf up to the checkpoint's root;
//  3. the checkpoint (a C2SP signed note) carries a valid Ed25519 signature by the log's key,
//     and its body names that tree size and root.
// Only WebCrypto is used; nothing here trusts the server's own verdict.
"use strict";
(function () {
  const enc = new TextEncoder();
  const b64d = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
  const b64e = (a) => btoa(String.fromCharCode(...a));
  const eq = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

  async function sha256(...parts) {
    const total = parts.reduce((n, p) => n + p.length, 0);
    const buf = new Uint8Array(total);
    let off = 0;
    for (const p of parts) { buf.set(p, off); off += p.length; }
    return new Uint8Array(await crypto.subtle.digest("SHA-256", buf));
  }

  async function rootFromInclusion(index, size, leaf, proof) {
    if (!(index < size)) throw new Error("index " + index + " is not below tree size " + size);
    let fn = index, sn = size - 1, r = leaf;
    for (const p of proof) {
      if (p.length !== 32) throw new Error("a proof hash is not 32 bytes");
      if (sn === 0) throw new Error("the proof is too long");
      if (fn % 2 === 1 || fn === sn) {
        r = await sha256(Uint8Array.of(1), p, r);
        if (fn % 2 === 0) {
          while (fn % 2 === 0 && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
        }
      } else {
        r = await sha256(Uint8Array.of(1), r, p);
      }
      fn = Math.floor(fn / 2); sn = Math.floor(sn / 2);
    }
    if (sn !== 0) throw new Error("the proof is too short");
    return r;
  }

  async function checkNote(note, verifierKey) {
    // verifier key: <name>+<key id hex>+<base64(0x01 || 32-byte Ed25519 key)>
    const parts = verifierKey.split("+");
    const name = parts[0], keyId = parts[1], blob = b64d(parts.slice(2).join("+"));
    if (blob.length !== 33 || blob[0] !== 1) throw new Error("the verifier key is not an Ed25519 key");
    const sep = note.lastIndexOf("\n\n");
    if (sep < 0) throw new Error("malformed checkpoint note");
    const body = note.slice(0, sep + 1);
    const lines = note.slice(sep + 2).split("\n").filter((l) => l);
    const key = await crypto.subtle.importKey("raw", blob.slice(1), { name: "Ed25519" }, false, ["verify"]);
    let ok = false;
    for (const line of lines) {
      const m = line.match(/^\u2014 (\S+) (\S+)$/);
      if (!m || m[1] !== name) continue;
      const raw = b64d(m[2]);
      const id = Array.from(raw.slice(0, 4), (x) => x.toString(16).padStart(2, "0")).join("");
      if (raw.length !== 68 || id !== keyId) continue;
      if (!(await crypto.subtle.verify({ name: "Ed25519" }, key, raw.slice(4), enc.encode(body)))) {
        throw new Error("the checkpoint signature does not verify");
      }
      ok = true;
    }
    if (!ok) throw new Error("the checkpoint carries no signature by " + name + "+" + keyId);
    const [origin, size, root] = body.split("\n");
    return { origin: origin, size: Number(size), root: b64d(root) };
  }

  async function verify(data, verifierKey) {
    const leaf = b64d(data.leaf_hash);
    if (data.entry_b64) {
      const computed = await sha256(Uint8Array.of(0), b64d(data.entry_b64));
      if (!eq(computed, leaf)) throw new Error("the entry bytes do not hash to its leaf hash");
    }
    if (!data.note) throw new Error("no signed checkpoint covers this entry yet");
    const cp = await checkNote(data.note, verifierKey);
    if (cp.size !== data.tree_size) throw new Error("the proof is for another tree size than the checkpoint");
    const root = await rootFromInclusion(data.index, data.tree_size, leaf, data.proof);
    if (!eq(root, cp.root)) throw new Error("the proof does not lead to the signed root");
    return "entry " + data.index + " is in the signed log of " + cp.size + " entries (root " +
      b64e(cp.root).slice(0, 12) + "…)" + (data.entry_b64 ? "; its bytes match the leaf hash" : "");
  }

  async function onClick(button) {
    const out = button.parentElement.querySelector(".verify-result");
    out.className = "verify-result pending";
    out.textContent = "…";
    try {
      let data, vkey;
      if (button.dataset.size) {
        data = {
          index: Number(button.dataset.index), tree_size: Number(button.dataset.size),
          leaf_hash: button.dataset.leaf, entry_b64: button.dataset.entry, note: button.dataset.note,
          proof: button.dataset.proof ? button.dataset.proof.split(" ").map(b64d) : [],
        };
        vkey = document.querySelector('meta[name="pps-verifier-key"]').content;
      } else {
        const resp = await fetch(button.dataset.proofUrl, { credentials: "same-origin" });
        const got = await resp.json();
        if (!resp.ok) throw new Error((got.error && got.error.message) || "HTTP " + resp.status);
        data = {
          index: got.index, tree_size: got.tree_size, leaf_hash: got.leaf_hash, entry_b64: got.entry_b64,
          note: got.checkpoint ? got.checkpoint.note : "", proof: got.inclusion_proof.map(b64d),
        };
        vkey = got.verifier_key;
      }
      out.textContent = "✓ " + (await verify(data, vkey));
      out.className = "verify-result ok";
    } catch (err) {
      out.textContent = "✗ " + err.message;
      out.className = "verify-result bad";
    }
  }

  document.addEventListener("click", (ev) => {
    const button = ev.target.closest("button.verify");
    if (button) onClick(button);
  });
  // the buttons come disabled: a click before this script has run would otherwise do nothing
  for (const button of document.querySelectorAll("button.verify")) button.disabled = false;
})();
