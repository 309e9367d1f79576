/**
 * zod/mini sets no locale, so its issues would read "Invalid input" for every rule; the server's
 * one-line errors use the English texts the classic API installs. Imported by every module that
 * builds zod/mini schemas.
 */
import * as z from 'zod/mini';
import en from 'zod/v4/locales/en.js';

z.config(en());
