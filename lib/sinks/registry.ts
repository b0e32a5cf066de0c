/**
 * The kinds of destination `--out` can name. Adding one (object storage,
 * say) is adding its file and one line here.
 *
 * @module
 */
import { fileSinkKind } from "./file.ts";
import type { SinkDestination, SinkKind } from "./sink.ts";
import { specialSinkKind } from "./special.ts";

/** The kinds that recognise their values, asked in order. */
const sinkKinds: readonly SinkKind[] = [
  specialSinkKind,
];

/** Opens `out` as the first kind that claims it; a value none claims is a directory or file. */
export async function openSinkDestination(out: string): Promise<SinkDestination> {
  for (const kind of sinkKinds) if (await kind.claims(out)) return await kind.open(out);
  return await fileSinkKind.open(out);
}
