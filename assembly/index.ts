export { matvecF32, matvecF16, matvecBf16 } from "./matvec";
