/**
 * Job templates on disk: `<config dir>/templates/NAME` and `NAME.PLATFORM`, read when a run is
 * dispatched, so an edited template applies to the next run.
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { isValidTemplateName } from '../core/index.js';
import { coerceError, TemplateNotFoundError } from '../errors.js';

/** A template and the platforms it has a variant for. */
export interface TemplateInfo {
  name: string;
  /** True when `NAME` itself exists (used on any platform without its own variant). */
  generic: boolean;
  platforms: string[];
}

/** The templates of one config dir. */
export class Templates {
  constructor(readonly dir: string) {}

  private files(): string[] {
    try {
      return readdirSync(this.dir, { withFileTypes: true }).filter((e) => e.isFile() && !e.name.startsWith('.')).map((e) => e.name);
    } catch (raw) {
      if ((raw as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw raw;
    }
  }

  /** Every template, with its platform variants. */
  list(): TemplateInfo[] {
    const files = this.files();
    const byName = new Map<string, TemplateInfo>();
    const entry = (name: string) => byName.get(name) ?? byName.set(name, { name, generic: false, platforms: [] }).get(name)!;
    for (const file of files) {
      const dot = file.indexOf('.');
      if (dot === -1) entry(file).generic = true;
      else entry(file.slice(0, dot)).platforms.push(file.slice(dot + 1));
    }
    return [...byName.values()].sort((a, b) => a.name.localeCompare(b.name));
  }

  /** Platforms that have their own variant of `name`. */
  platformsFor(name: string): string[] {
    return this.list().find((t) => t.name === name)?.platforms.sort() ?? [];
  }

  /** The text of `name` for `platform`: `NAME.PLATFORM` where it exists, else `NAME`. */
  read(name: string, platform: string): { file: string; text: string } {
    if (!isValidTemplateName(name)) throw new TemplateNotFoundError(`'${name}' is not a template name`);
    for (const file of [`${name}.${platform}`, name]) {
      try {
        return { file, text: readFileSync(path.join(this.dir, file), 'utf8') };
      } catch (raw) {
        if ((raw as NodeJS.ErrnoException).code !== 'ENOENT') throw new TemplateNotFoundError(`cannot read template ${file}: ${coerceError(raw).message}`);
      }
    }
    throw new TemplateNotFoundError(`no template '${name}' for platform ${platform} (looked for ${name}.${platform} and ${name} in ${this.dir})`);
  }
}
