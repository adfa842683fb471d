/* wrong: no module "widget" in the table */
#pragma once
