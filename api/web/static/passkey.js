// Passkeys in the enterprise portal: register one, and sign a consent action's exact text with it.
// The challenge of a signature is the SHA-256 of the text the page shows (pps_wire.passkey).
"use strict";
(function () {
  const b64u = (buf) =>
    btoa(String.fromCharCode(...new Uint8Array(buf))).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  const unb64u = (s) =>
    Uint8Array.from(atob(s.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((s.length + 3) % 4)), (c) =>
      c.charCodeAt(0));
  const unb64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));

  const create = document.getElementById("passkey-create");
  if (create) {
    create.addEventListener("click", async (ev) => {
      ev.preventDefault();
      const form = create.form;
      if (!form.reportValidity()) return;
      const opts = await (await fetch(create.dataset.options, { credentials: "same-origin" })).json();
      const cred = await navigator.credentials.create({
        publicKey: { ...opts, challenge: unb64u(opts.challenge), user: { ...opts.user, id: unb64u(opts.user.id) } },
      });
      form.elements.credential.value = JSON.stringify({
        id: cred.id,
        rawId: b64u(cred.rawId),
        type: cred.type,
        response: {
          clientDataJSON: b64u(cred.response.clientDataJSON),
          attestationObject: b64u(cred.response.attestationObject),
        },
      });
      form.submit();
    });
  }

  const sign = document.getElementById("passkey-sign");
  if (sign) {
    sign.addEventListener("click", async (ev) => {
      ev.preventDefault();
      const form = sign.form;
      const challenge = await crypto.subtle.digest("SHA-256", unb64(form.elements.text_b64.value));
      const allow = JSON.parse(sign.dataset.credentials).map((id) => ({ type: "public-key", id: unb64u(id) }));
      const got = await navigator.credentials.get({
        publicKey: { challenge, allowCredentials: allow, userVerification: "preferred", timeout: 120000 },
      });
      form.elements.credential_id.value = b64u(got.rawId);
      form.elements.assertion.value = JSON.stringify({
        authenticatorData: b64u(got.response.authenticatorData),
        clientDataJSON: b64u(got.response.clientDataJSON),
        signature: b64u(got.response.signature),
      });
      form.submit();
    });
  }
})();
