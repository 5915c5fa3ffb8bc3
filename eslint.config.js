// eslint for the web console (src/tuneserve/ui): the recommended rules, browser globals, ES modules.
// `make lint` runs it, and `tsc -p .` (tsconfig.json) type-checks the same files from their JSDoc.
import js from '@eslint/js';
import globals from 'globals';

export default [
  // The vendored uPlot is minified upstream code: checked by its authors, not here.
  {ignores: ['src/tuneserve/ui/vendor/']},
  js.configs.recommended,
  {
    files: ['src/tuneserve/ui/**/*.js'],
    languageOptions: {
      ecmaVersion: 2022,
      sourceType: 'module',
      globals: globals.browser,
    },
  },
  {
    files: ['eslint.config.js'],
    languageOptions: {sourceType: 'module', globals: globals.node},
  },
];
