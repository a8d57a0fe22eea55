/**
 * JSON text for a configuration: two-space indentation like `JSON.stringify(v, null, 2)`, but
 * arrays of plain values and small objects without nesting on one line, as the README writes them.
 */
export function formatConfigJson(value: unknown): string {
  const render = (v: unknown, indent: string): string => {
    if (v === null || typeof v !== 'object') return JSON.stringify(v);
    const entries = Array.isArray(v) ? null : Object.entries(v as Record<string, unknown>).filter(([, x]) => x !== undefined);
    const items = entries === null ? (v as unknown[]) : entries.map(([, x]) => x);
    if (items.every((x) => x === null || typeof x !== 'object')) {
      const oneLine = entries === null
        ? `[${items.map((x) => JSON.stringify(x)).join(', ')}]`
        : `{ ${entries.map(([k, x]) => `${JSON.stringify(k)}: ${JSON.stringify(x)}`).join(', ')} }`;
      if (indent.length + oneLine.length <= 100) return oneLine;
    }
    const inner = `${indent}  `;
    if (entries === null) return `[\n${items.map((x) => inner + render(x, inner)).join(',\n')}\n${indent}]`;
    return `{\n${entries.map(([k, x]) => `${inner}${JSON.stringify(k)}: ${render(x, inner)}`).join(',\n')}\n${indent}}`;
  };
  return `${render(value, '')}\n`;
}
