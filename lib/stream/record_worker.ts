/**
 * Web Worker body that turns record buffers into finished data records
 * (checksum, zstd, header; see encodeDataRecordInPlace) off the main thread;
 * node:zlib's async zstd would still run on the calling thread. Messages are
 * {@link RecordRequest} in and {@link RecordResponse} out.
 *
 * @module
 */
import { type DataRecordSpec, encodeDataRecordInPlace } from "./data_record.ts";

/** A buffer holding `spec.length` bytes of disk data after the header's room; transferred both ways. */
export interface RecordRequest {
  readonly id: number;
  readonly spec: DataRecordSpec;
  readonly buf: Uint8Array;
}

/**
 * The encoded record, or an error message. A record that compressed to at
 * most half its buffer comes as a compact copy, with the buffer handed back
 * as `spare` for the next piece: in-flight records then hold what they
 * store, not a megabyte each. Otherwise the record is a view of the
 * request's buffer. Both are transferred back.
 */
export interface RecordResponse {
  readonly id: number;
  readonly record?: Uint8Array;
  readonly spare?: Uint8Array;
  readonly error?: string;
}

const scope = globalThis as unknown as {
  onmessage: ((ev: MessageEvent<RecordRequest>) => void) | null;
  postMessage(msg: RecordResponse, transfer?: Transferable[]): void;
};

scope.onmessage = (ev) => {
  const { id, spec, buf } = ev.data;
  try {
    const record = encodeDataRecordInPlace(buf, spec);
    if (record.length <= buf.length / 2) {
      const compact = record.slice();
      scope.postMessage({ id, record: compact, spare: buf }, [
        compact.buffer as ArrayBuffer,
        buf.buffer as ArrayBuffer,
      ]);
    } else {
      scope.postMessage({ id, record }, [record.buffer as ArrayBuffer]);
    }
  } catch (err) {
    scope.postMessage({ id, error: String(err) });
  }
};
