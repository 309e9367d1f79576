/** Job templates: literal `%%NAME%%` placeholders, replaced at dispatch (robur's orb-build templates). */

const PLACEHOLDER = /%%([A-Za-z0-9_]+)%%/g;

/** Thrown when a template uses a variable the job does not define. */
export class TemplateError extends TypeError {}

/** The variable names a text uses (`%%NAME%%`), in order, repeats included. */
export function templateNames(text: string): string[] {
  return [...text.matchAll(PLACEHOLDER)].map((m) => m[1]!);
}

/** Replaces every `%%NAME%%` with `vars[NAME]`; any unknown NAME is an error naming them all. */
export function expandTemplate(text: string, vars: Record<string, string>): string {
  const unknown = new Set<string>();
  const out = text.replace(PLACEHOLDER, (whole, name: string) => {
    if (Object.hasOwn(vars, name)) return vars[name]!;
    unknown.add(name);
    return whole;
  });
  if (unknown.size > 0) {
    throw new TemplateError(`the template uses ${[...unknown].map((n) => `%%${n}%%`).join(', ')}, which the job does not define (add --var NAME=VALUE)`);
  }
  return out;
}
