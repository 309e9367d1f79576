/**
 * Job templates on disk: `<config dir>/templates/NAME` and `NAME.PLATFORM`, read when a run is
 * dispatched, so an edited template applies to the next run. robur's builder keeps its orb-build
 * templates as `<config dir>/orb-build.template.PLATFORM`; those are read too, so an operator
 * copies /etc/builder's files as they are. For a platform, Kiln's own `templates/orb-build.PLATFORM`
 * wins over builder's file, and builder's file over a generic `templates/orb-build`.
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { isValidPlatform, isValidTemplateName, PLATFORM_RULE } from '../core/index.js';
import { coerceError, TemplateNotFoundError } from '../errors.js';
import { ORB_BUILD_TEMPLATE } from './robur/job-mapping.js';

/** The prefix of builder's template files in the config dir: `orb-build.template.PLATFORM`. */
const BUILDER_PREFIX = `${ORB_BUILD_TEMPLATE}.template.`;

/** The names of the regular, non-dot files of `dir` (none when it does not exist). */
function filesOf(dir: string): string[] {
  try {
    return readdirSync(dir, { withFileTypes: true }).filter((e) => e.isFile() && !e.name.startsWith('.')).map((e) => e.name);
  } catch (raw) {
    if ((raw as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw raw;
  }
}

/** A template and the platforms it has a variant for. */
export interface TemplateInfo {
  name: string;
  /** True when `NAME` itself exists (used on any platform without its own variant). */
  generic: boolean;
  platforms: string[];
  /**
   * Platforms whose variant is builder's `<config dir>/orb-build.template.PLATFORM` (no Kiln file of
   * that platform shadows it); absent when none.
   */
  builderPlatforms?: string[];
}

/** The templates of one config dir. */
export class Templates {
  /**
   * @param dir Kiln's templates dir (`<config dir>/templates`).
   * @param builderDir where builder's `orb-build.template.PLATFORM` files are read (the config dir); none: not read.
   */
  constructor(readonly dir: string, readonly builderDir?: string) {}

  private files(): string[] {
    return filesOf(this.dir);
  }

  /** The platforms builder's orb-build template files in the config dir are for. */
  private builderPlatforms(): string[] {
    if (this.builderDir === undefined) return [];
    return filesOf(this.builderDir).filter((f) => f.startsWith(BUILDER_PREFIX) && f.length > BUILDER_PREFIX.length).map((f) => f.slice(BUILDER_PREFIX.length));
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
    for (const platform of this.builderPlatforms()) {
      const orb = entry(ORB_BUILD_TEMPLATE);
      if (orb.platforms.includes(platform)) continue;
      orb.platforms.push(platform);
      (orb.builderPlatforms ??= []).push(platform);
    }
    for (const info of byName.values()) {
      info.platforms.sort();
      info.builderPlatforms?.sort();
    }
    return [...byName.values()].sort((a, b) => a.name.localeCompare(b.name));
  }

  /** Platforms that have their own variant of `name`. */
  platformsFor(name: string): string[] {
    return this.list().find((t) => t.name === name)?.platforms.sort() ?? [];
  }

  /**
   * The text of `name` for `platform` and the file it was read from: `NAME.PLATFORM` where it
   * exists, else (orb-build only) builder's `<config dir>/orb-build.template.PLATFORM`, else `NAME`.
   */
  read(name: string, platform: string): { file: string; text: string } {
    if (!isValidTemplateName(name)) throw new TemplateNotFoundError(`'${name}' is not a template name`);
    // The platform becomes part of a file name: one that is not a platform name (`/../admin.token`) reads nothing.
    if (!isValidPlatform(platform)) throw new TemplateNotFoundError(`no template '${name}' for '${platform}': ${PLATFORM_RULE}`);
    const builder = name === ORB_BUILD_TEMPLATE && this.builderDir !== undefined ? [path.join(this.builderDir, `${BUILDER_PREFIX}${platform}`)] : [];
    for (const file of [path.join(this.dir, `${name}.${platform}`), ...builder, path.join(this.dir, name)]) {
      try {
        return { file, text: readFileSync(file, 'utf8') };
      } catch (raw) {
        if ((raw as NodeJS.ErrnoException).code !== 'ENOENT') throw new TemplateNotFoundError(`cannot read template ${file}: ${coerceError(raw).message}`);
      }
    }
    const also = builder.length > 0 ? `, and for ${path.basename(builder[0]!)} in ${this.builderDir}` : '';
    throw new TemplateNotFoundError(`no template '${name}' for platform ${platform} (looked for ${name}.${platform} and ${name} in ${this.dir}${also})`);
  }
}
