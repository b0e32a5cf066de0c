/**
 * Removal of the overlay files QEMU created for a point in time.
 *
 * @module
 */

/** Removes a file QEMU created; a caller-given `remove` handles files on another host. */
export async function removeOverlayFile(
  path: string,
  remove?: (path: string) => Promise<void>,
): Promise<void> {
  if (remove) return await remove(path);
  try {
    await Deno.remove(path);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
}
