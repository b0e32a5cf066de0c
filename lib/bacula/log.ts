/**
 * The backend's log: a file, never stderr (the FD turns stderr into job
 * errors). Lines are kept in memory until the file is known (it comes with
 * the Params block).
 *
 * @module
 */

/** Appends timestamped lines to a file chosen once the parameters are known. */
export class BackendLog {
  #path: string | null = null;
  #early: string[] = [];
  #failed = false;

  /** Starts writing to `path`, flushing the lines logged so far. Returns false if it cannot. */
  open(path: string): boolean {
    this.#path = path;
    const early = this.#early.join("");
    this.#early = [];
    return this.#append(early);
  }

  /** Logs one line (newlines inside are escaped so every entry stays one line). */
  line(text: string): void {
    const entry = `${new Date().toISOString()} [${Deno.pid}] ${text.replaceAll("\n", "\\n")}\n`;
    if (this.#path === null) this.#early.push(entry);
    else this.#append(entry);
  }

  #append(text: string): boolean {
    if (this.#failed || this.#path === null || text === "") return !this.#failed;
    try {
      Deno.writeTextFileSync(this.#path, text, { append: true, create: true });
      return true;
    } catch {
      this.#failed = true;
      return false;
    }
  }
}
