import assert from "node:assert/strict";
import {
  canonicalQuery,
  computeSignature,
  encodeQuery,
  encodeValue,
  formatExpires,
  signParams,
} from "./signing.ts";

// The request of CloudStack's "Signing API Requests" guide. The expected
// signature was computed independently on this machine with
//   echo -n '<lower-cased query>' | openssl sha1 -binary -hmac '<secret>' | base64
const GUIDE_KEYS = {
  apiKey: "miVr6X7u6bN_sdahOBpjNejPgEsT35eXq-jB8CG20YI3yaxXcgpyuaIRmFI_EJTVwZ0nUkkJbPmY3y2bciKwFQ",
  secretKey:
    "VDaACYb0LV9eNjTetIOElcVQkvJck_J_QljX_FcHRj87ZKiy0z0ty0ZsYBkoXkY9b7eq1EhwJaw7FF3akA3KBQ",
};
const GUIDE_PARAMS = {
  command: "deployVirtualMachine",
  serviceOfferingId: "1",
  diskOfferingId: "1",
  templateId: "2",
  zoneId: "4",
  apiKey: GUIDE_KEYS.apiKey,
};

Deno.test("canonical query of the guide's example matches the documented string", () => {
  assert.deepStrictEqual(
    canonicalQuery(GUIDE_PARAMS).toLowerCase(),
    "apikey=mivr6x7u6bn_sdahobpjnejpgest35exq-jb8cg20yi3yaxxcgpyuairmfi_ejtvwz0nukkjbpmy3y2bcikwfq" +
      "&command=deployvirtualmachine&diskofferingid=1&serviceofferingid=1&templateid=2&zoneid=4",
  );
});

Deno.test("signature of the guide's example equals openssl's HMAC-SHA1", () => {
  assert.deepStrictEqual(
    computeSignature(GUIDE_PARAMS, GUIDE_KEYS.secretKey),
    "TXsVHhYXzYzqJ6kCUBv+Yz/w6Sw=",
  );
});

Deno.test("values are encoded like Java's URLEncoder with spaces as %20", () => {
  assert.deepStrictEqual(encodeValue("a b+c/é~!'()*._-"), "a%20b%2Bc%2F%C3%A9%7E%21%27%28%29*._-");
  assert.deepStrictEqual(encodeValue("2024-05-01T12:00:00+0000"), "2024-05-01T12%3A00%3A00%2B0000");
  assert.deepStrictEqual(encodeValue(""), "");
  assert.deepStrictEqual(encodeValue("😀"), "%F0%9F%98%80");
});

Deno.test("names sort in Java String order (case-sensitive), signature excluded", () => {
  // 'K' (0x4B) sorts before '_' (0x5F), 'k' (0x6B) after it: the server sorts the names as sent.
  const query = canonicalQuery({ api_x: "1", apiKey: "k", Zed: "z", signature: "s" });
  assert.deepStrictEqual(query, "Zed=z&apiKey=k&api_x=1");
});

Deno.test("version 3 adds signatureVersion and expires, both signed", () => {
  const now = new Date("2024-05-01T12:00:00.123Z");
  const signed = signParams({ command: "listZones" }, GUIDE_KEYS, { now });
  assert.deepStrictEqual(signed.signatureVersion, "3");
  assert.deepStrictEqual(signed.expires, "2024-05-01T12:10:00+0000");
  assert.deepStrictEqual(signed.apiKey, GUIDE_KEYS.apiKey);
  const { signature, ...unsigned } = signed;
  assert.deepStrictEqual(signature, computeSignature(unsigned, GUIDE_KEYS.secretKey));
  assert.deepStrictEqual(formatExpires(new Date(0)), "1970-01-01T00:00:00+0000");
});

Deno.test("version 1 has no expiry", () => {
  const signed = signParams({ command: "listZones" }, GUIDE_KEYS, { signatureVersion: 1 });
  assert.deepStrictEqual(Object.keys(signed).sort(), ["apiKey", "command", "signature"]);
});

Deno.test("signatures agree with an independent WebCrypto implementation", async () => {
  const cases: Record<string, string>[] = [
    { command: "listVirtualMachines", keyword: "i-2-10-VM", listall: "true", page: "1" },
    { command: "createTags", "tags[0].key": "owner name", "tags[0].value": "Zoë & co/ops" },
    { command: "listVolumes", virtualmachineid: "6f1f0a3c-6b5d-4c53-9a43-1d2b6a1e8f10" },
  ];
  const key = await crypto.subtle.importKey(
    "raw",
    new TextEncoder().encode(GUIDE_KEYS.secretKey),
    { name: "HMAC", hash: "SHA-1" },
    false,
    ["sign"],
  );
  for (const params of cases) {
    const withKey: Record<string, string> = { ...params, apiKey: GUIDE_KEYS.apiKey };
    // Independent canonical form: encodeURIComponent, then the few characters it leaves alone
    // but Java encodes.
    const javaEncode = (v: string) =>
      encodeURIComponent(v).replace(
        /[!'()~]/g,
        (c) => "%" + c.charCodeAt(0).toString(16).toUpperCase(),
      );
    const names = Object.keys(withKey).sort();
    const text = names.map((n) => `${n}=${javaEncode(withKey[n])}`)
      .join("&").toLowerCase();
    const mac = await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(text));
    const expected = btoa(String.fromCharCode(...new Uint8Array(mac)));
    assert.deepStrictEqual(computeSignature(withKey, GUIDE_KEYS.secretKey), expected);
  }
});

Deno.test("encodeQuery round-trips through URLSearchParams", () => {
  const params = { command: "x", "tags[0].key": "a b", note: "x+y&z=é" };
  const decoded = Object.fromEntries(new URLSearchParams(encodeQuery(params)));
  assert.deepStrictEqual(decoded, params);
  assert.match(encodeQuery(params), /tags%5B0%5D\.key=a%20b/);
});
