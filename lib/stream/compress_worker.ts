/**
 * Web Worker body that zstd-compresses record payloads off the main thread
 * (node:zlib's async zstd still runs on the calling thread). Messages are
 * {@link CompressRequest} in and {@link CompressResponse} out.
 *
 * @module
 */
import { zstdCompress } from "./zstd.ts";

/** One payload to compress; `data` is transferred to the worker. */
export interface CompressRequest {
  readonly id: number;
  readonly level: number;
  readonly data: Uint8Array;
}

/**
 * The payload to store (transferred back): the zstd frame when it is smaller
 * than the input (`compressed`), else the input itself; or an error message.
 */
export interface CompressResponse {
  readonly id: number;
  readonly out?: Uint8Array;
  readonly compressed?: boolean;
  readonly error?: string;
}

const scope = globalThis as unknown as {
  onmessage: ((ev: MessageEvent<CompressRequest>) => void) | null;
  postMessage(msg: CompressResponse, transfer?: Transferable[]): void;
};

scope.onmessage = (ev) => {
  const { id, level, data } = ev.data;
  try {
    const frame = zstdCompress(data, level);
    if (frame.byteLength >= data.byteLength) {
      scope.postMessage({ id, out: data, compressed: false }, [data.buffer as ArrayBuffer]);
      return;
    }
    // A small result may be a view into node's shared Buffer pool: transfer only a private copy.
    const out = frame.byteOffset === 0 && frame.byteLength === frame.buffer.byteLength
      ? frame
      : frame.slice();
    scope.postMessage({ id, out, compressed: true }, [out.buffer as ArrayBuffer]);
  } catch (err) {
    scope.postMessage({ id, error: String(err) });
  }
};
