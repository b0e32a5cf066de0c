/*
 * cloudstack-fd: the Bacula File Daemon plugin of dirtybit.
 *
 * Copyright (C) the dirtybit authors.
 * License: GNU Affero General Public License v3.0 or later (AGPL-3.0-or-later), the same
 * license family as Bacula, whose metaplugin library this file is linked with.
 *
 * The .so holds names only. Bacula's metaplugin (src/plugins/fd/pluginlib) does all the
 * File Daemon work and hands every job to the backend `cloudstack_backend` in the FD's
 * executable directory, which runs `dirtybit backend` (PTCOMM on its stdin and stdout).
 * The valid parameters and the restore options come from cloudstack-params.h, generated
 * from dirtybit's parameter table at build time.
 */

#include "pluginlib/pluginlib.h"
#include "pluginlib/metaplugin.h"
#include "cloudstack-params.h"

/* Shown by `status client` and in the FD's debug output. */
const char *PLUGIN_LICENSE     = "AGPLv3"; /* the FD loads only AGPLv3 plugins */
const char *PLUGIN_AUTHOR      = "dirtybit";
const char *PLUGIN_DATE        = "2026";
const char *PLUGIN_VERSION     = "1";
const char *PLUGIN_DESCRIPTION = "dirtybit: incremental backup of CloudStack/KVM VM disks";

/* Names the backend checks: FileSet prefix, handshake name and API, file namespace. */
const char *PLUGINPREFIX       = "cloudstack:";
const char *PLUGINNAME         = "cloudstack";
const char *PLUGINAPI          = "1";
const char *PLUGINNAMESPACE    = "@cloudstack";
const bool CUSTOMNAMESPACE     = true;
const bool CUSTOMPREVJOBNAME   = false;
const char *BACKEND_CMD        = "cloudstack_backend";

/* 0: the metaplugin's defaults (5 s between SIGUSR1 and closing the pipes, 3600 s timeout). */
const int32_t CUSTOMCANCELSLEEP = 0;
const uint32_t BACKEND_TIMEOUT  = 0;

/* Every restore goes to the backend: it rebuilds disks from the streams itself. */
const bool CORELOCALRESTORE = false;
/* Accurate Incrementals tell the backend with `Accurate=1`. */
const bool ACCURATEPLUGINPARAMETER = true;
const int ADDINCLUDESTRIPOPTION = 0;
/* Full jobs save the restore options, which bconsole then offers as Plugin Options. */
const bool DONOTSAVE_FT_PLUGIN_CONFIG = false;

checkFile_t checkFile = NULL;
const metadataTypeMap plugin_metadata_map[] = {{NULL, plugin_meta_invalid}};
