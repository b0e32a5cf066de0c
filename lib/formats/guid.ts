/**
 * GUIDs in Microsoft's mixed-endian byte order (`uuid.bytes_le`), as VHDX
 * stores them. Pure logic.
 *
 * @module
 */

/** Encodes "XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX" as 16 bytes, first three fields little-endian. */
export function guidBytes(text: string): Uint8Array {
  const hex = text.replace(/-/g, "");
  if (!/^[0-9a-fA-F]{32}$/.test(hex)) throw new RangeError(`not a GUID: ${text}`);
  const b = Uint8Array.from(hex.match(/../g)!, (h) => parseInt(h, 16));
  return Uint8Array.from([b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], ...b.subarray(8)]);
}

/** A random (version 4) GUID's 16 bytes. */
export function randomGuid(): Uint8Array {
  return guidBytes(crypto.randomUUID());
}
