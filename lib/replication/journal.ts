/**
 * The receiver's cycle journal: the messages of one batch (begin, data and
 * zero records, end), each stored as `u32 length || message bytes` exactly as
 * they arrived (still compressed). A journal is written and synced before
 * the batch touches the replica; whether it is complete is recorded in the
 * replica's state file, not in the journal, so a torn journal is never
 * mistaken for a complete one.
 *
 * @module
 */
import { InputError } from "../core/errors.ts";
import { decodeMessage, encodeMessage, type Message } from "./messages.ts";
import { openForWriting, writeToFile } from "../core/files.ts";
import { fileSystemError } from "../core/errors.ts";

/** Appends messages to a new journal file. */
export class JournalWriter {
  #bytes = 0;

  private constructor(readonly path: string, readonly file: Deno.FsFile) {}

  /** Creates (or truncates) the journal at `path`. */
  static async create(path: string): Promise<JournalWriter> {
    const file = await openForWriting(path, {
      write: true,
      create: true,
      truncate: true,
      mode: 0o600,
    });
    return new JournalWriter(path, file);
  }

  /** Bytes written so far. */
  get bytes(): number {
    return this.#bytes;
  }

  async append(msg: Message): Promise<void> {
    const body = encodeMessage(msg);
    const record = new Uint8Array(4 + body.length);
    new DataView(record.buffer).setUint32(0, body.length);
    record.set(body, 4);
    await writeToFile(this.file, this.path, record);
    this.#bytes += record.length;
  }

  /** Syncs the journal to stable storage and closes it. */
  async syncAndClose(): Promise<void> {
    try {
      await this.file.sync();
    } catch (err) {
      throw fileSystemError(err, "cannot write", this.path);
    } finally {
      this.file.close();
    }
  }

  /** Closes without syncing (the batch is abandoned). */
  abandon(): void {
    try {
      this.file.close();
    } catch {
      // already closed
    }
  }
}

/**
 * Reads back a journal that the state file says is complete and `bytes`
 * long; anything else is an InputError (the replica is then not touched).
 */
export async function* readJournal(path: string, bytes: number): AsyncGenerator<Message> {
  const file = await Deno.open(path, { read: true });
  try {
    const size = (await file.stat()).size;
    if (size < bytes) {
      throw new InputError(`journal ${path} has ${size} bytes, the state file says ${bytes}`);
    }
    let pos = 0;
    const head = new Uint8Array(4);
    while (pos < bytes) {
      await readFull(file, head, path);
      const length = new DataView(head.buffer).getUint32(0);
      if (pos + 4 + length > bytes) {
        throw new InputError(`journal ${path} record at ${pos} is cut off`);
      }
      const body = new Uint8Array(length);
      await readFull(file, body, path);
      pos += 4 + length;
      yield decodeMessage(body);
    }
  } finally {
    file.close();
  }
}

async function readFull(file: Deno.FsFile, buf: Uint8Array, path: string): Promise<void> {
  for (let off = 0; off < buf.length;) {
    const n = await file.read(buf.subarray(off));
    if (n === null) throw new InputError(`journal ${path} ends early`);
    off += n;
  }
}
