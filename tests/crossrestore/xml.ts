/**
 * A small strict XML reader for tests: parses a document into an element
 * tree (names, attributes, text) and throws on anything not well-formed, so
 * generated OVF descriptors are parsed back rather than pattern-matched.
 *
 * @module
 */

/** One element. */
export interface XmlElement {
  name: string;
  attrs: Record<string, string>;
  children: XmlElement[];
  text: string;
}

const ENTITIES: Record<string, string> = { amp: "&", lt: "<", gt: ">", quot: '"', apos: "'" };

function unescape(s: string): string {
  return s.replace(/&([a-z]+);/g, (_, e: string) => {
    if (!(e in ENTITIES)) throw new Error(`unknown entity &${e};`);
    return ENTITIES[e];
  });
}

/** Parses `text`; throws on mismatched tags, bad attributes or trailing content. */
export function parseXml(text: string): XmlElement {
  const body = text.replace(/^<\?xml[^?]*\?>\s*/, "");
  const token = /<\/?([A-Za-z_][\w:.-]*)((?:\s+[\w:.-]+="[^"<]*")*)\s*(\/?)>|([^<]+)/gy;
  const stack: XmlElement[] = [{ name: "#doc", attrs: {}, children: [], text: "" }];
  let m: RegExpExecArray | null;
  let at = 0;
  while (at < body.length) {
    token.lastIndex = at;
    m = token.exec(body);
    if (!m) throw new Error(`malformed XML at offset ${at}: ${body.slice(at, at + 40)}`);
    at = token.lastIndex;
    if (m[4] !== undefined) {
      stack.at(-1)!.text += unescape(m[4]);
      continue;
    }
    const closing = m[0].startsWith("</");
    if (closing) {
      const open = stack.pop()!;
      if (open.name !== m[1]) throw new Error(`</${m[1]}> closes <${open.name}>`);
      continue;
    }
    const attrs: Record<string, string> = {};
    for (const a of m[2].matchAll(/([\w:.-]+)="([^"]*)"/g)) {
      if (a[1] in attrs) throw new Error(`duplicate attribute ${a[1]}`);
      attrs[a[1]] = unescape(a[2]);
    }
    const el: XmlElement = { name: m[1], attrs, children: [], text: "" };
    stack.at(-1)!.children.push(el);
    if (m[3] !== "/") stack.push(el);
  }
  if (stack.length !== 1) throw new Error(`unclosed <${stack.at(-1)!.name}>`);
  const roots = stack[0].children;
  if (roots.length !== 1 || stack[0].text.trim()) {
    throw new Error("document needs exactly one root");
  }
  return roots[0];
}

/** Children named `name`. */
export function children(el: XmlElement, name: string): XmlElement[] {
  return el.children.filter((c) => c.name === name);
}

/** The one child named `name` (throws when absent or repeated). */
export function child(el: XmlElement, name: string): XmlElement {
  const found = children(el, name);
  if (found.length !== 1) throw new Error(`<${el.name}> has ${found.length} <${name}>`);
  return found[0];
}
