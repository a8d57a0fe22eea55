/**
 * The JSON Schema of the config file, generated from the zod schema (`npm run schema`
 * writes config/sessionlb.schema.json). Editors use it through `"$schema"` for
 * completion and inline docs; a test keeps the committed file equal to this output.
 */
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { configSchema } from './schema.js';


/** `format` values JSON Schema defines; zod also emits its own ("starts_with"), which strict validators reject. */
const STANDARD_FORMATS = new Set([
  'date-time', 'date', 'time', 'duration', 'email', 'idn-email', 'hostname', 'idn-hostname', 'ipv4', 'ipv6',
  'uri', 'uri-reference', 'iri', 'iri-reference', 'uuid', 'uri-template', 'json-pointer', 'relative-json-pointer', 'regex',
]);

function dropNonStandardFormats(node: unknown): void {
  if (node === null || typeof node !== 'object') return;
  if (Array.isArray(node)) {
    for (const item of node) dropNonStandardFormats(item);
    return;
  }
  const obj = node as Record<string, unknown>;
  if (typeof obj.format === 'string' && !STANDARD_FORMATS.has(obj.format)) delete obj.format; // the `pattern` next to it says the same
  for (const value of Object.values(obj)) dropNonStandardFormats(value);
}

/** The JSON Schema (draft 2020-12) of what may be written in a config file. */
export function configJsonSchema(): Record<string, unknown> {
  const schema = z.toJSONSchema(configSchema, { io: 'input', target: 'draft-2020-12', unrepresentable: 'any' }) as Record<string, unknown>;
  dropNonStandardFormats(schema);
  // zod cannot say it: `servers` is required unless the file has `streams` (TCP proxies only).
  schema.anyOf = [{ required: ['servers'] }, { required: ['streams'] }];
  return {
    $schema: schema.$schema,
    title: 'sessionlb configuration',
    description: 'sessionlb config file: nginx\'s structure and defaults, nginx\'s names in camelCase. Durations are nginx strings ("500ms", "10s", "1m").',
    ...Object.fromEntries(Object.entries(schema).filter(([k]) => k !== '$schema')),
  };
}

/** The file's exact text (2-space indent, trailing newline). */
export function configJsonSchemaText(): string {
  return JSON.stringify(configJsonSchema(), null, 2) + '\n';
}

const invokedAs = process.argv[1];
if (invokedAs !== undefined && realpathSync(invokedAs) === realpathSync(fileURLToPath(import.meta.url))) {
  process.stdout.write(configJsonSchemaText());
}
