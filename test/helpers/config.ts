/** What `check` would report for a config object, as "JSON path: message" lines ([] when it loads). */
import { loadConfig } from '../../src/config/load.js';
import { ConfigError } from '../../src/config/model.js';

export async function configProblems(raw: unknown, file = '<test>'): Promise<string[]> {
  try {
    await loadConfig(raw, file);
    return [];
  } catch (err) {
    if (err instanceof ConfigError) return err.problems.map((p) => `${p.path}: ${p.message}`);
    throw err;
  }
}
